"""A job's progress across its worker's stages: decoding, the operation, encoding the result and
its fallback, each a share of the bar in proportion to what it is expected to cost.

Within its share, an operation reports its own steps (bands, runs) and a PNG's encode its bands; a
stage without steps (a decode; a JPEG, WebP or AVIF encode; a resize) moves the bar when it ends.
Before any of it reaches the bar, lifecycle.ProgressReporter throttles it (a job quicker than its
interval reports nothing but its end), and the pages show a bar with no progress yet as working,
not as empty.

The costs are nanoseconds per pixel of a 2 MP photo on the development machine (an operation's is
its Operation's `ns_per_pixel`). Only their ratios matter, and ratios hold from one machine to
another far better than times do; an estimate off by half moves where a stage's share begins, never
whether the bar moves.
"""

from dataclasses import dataclass
from itertools import accumulate

from processing.imaging.codecs import ProgressCallback

# Decoding, per pixel decoded, by the upload's format (Job.input_format).
DECODE_NS = {"jpeg": 4, "png": 16, "webp": 18, "avif": 17, "heif": 100, "gif": 8, "bmp": 2, "tiff": 2}
# Encoding, per pixel of the result, by its format.
ENCODE_NS = {"jpeg": 6, "png": 230, "webp": 160, "avif": 330, "jxl": 70}
# A format or operation not measured.
UNMEASURED_NS = 20.0

STAGES = ("decode", "operation", "encode", "fallback")


@dataclass(frozen=True)
class Costs:
    """What one job's stages are expected to cost, in the units of the tables above times pixels."""

    decode: float
    operation: float
    encode: float
    fallback: float = 0.0

    @classmethod
    def of(
        cls,
        *,
        input_format: str,
        decoded_pixels: int,
        operation_ns: float,
        output_format: str,
        output_pixels: int,
        fallback_format: str = "",
    ) -> "Costs":
        """The costs of decoding `decoded_pixels` of an upload in `input_format`, the operations'
        `operation_ns` (each step's `ns_per_pixel` times the pixels it works on), and encoding
        `output_pixels` in `output_format` (and its fallback's format, if one is made)."""

        def encoding(format: str) -> float:
            return ENCODE_NS.get(format, UNMEASURED_NS) * output_pixels if format else 0.0

        return cls(
            decode=DECODE_NS.get(input_format.lower(), UNMEASURED_NS) * decoded_pixels,
            operation=operation_ns,
            encode=encoding(output_format),
            fallback=encoding(fallback_format),
        )


class Stages:
    """The bar cut into the stages' shares: `stage(name)` is the progress callback of a stage's own
    work (0 to 1 within its share), `done(name)` moves the bar to the end of its share."""

    def __init__(self, report: ProgressCallback, costs: Costs):
        self.report = report
        weights = [max(0.0, getattr(costs, name)) for name in STAGES]
        if not any(weights):  # nothing to tell the stages apart: the first three share the bar
            weights = [1.0, 1.0, 1.0, 0.0]
        total = sum(weights)
        ends = [weight / total for weight in accumulate(weights)]
        self.shares = dict(zip(STAGES, zip([0.0, *ends[:-1]], ends, strict=True), strict=True))

    def stage(self, name: str) -> ProgressCallback:
        start, end = self.shares[name]
        return lambda fraction: self.report(start + (end - start) * fraction)

    def done(self, name: str) -> None:
        self.report(self.shares[name][1])
