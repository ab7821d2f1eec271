"""A JSON report about the image: dimensions, brightness, contrast, histogram, dominant colours, sharpness."""

from typing import Any, cast

import numpy as np
from PIL import Image, ImageStat

from processing.imaging.operations.base import Operation, OperationResult, ProgressCallback, ReportParams

HISTOGRAM_BINS = 16
DOMINANT_COLORS = 5
# Colour and sharpness statistics are computed on a copy this size: plenty for a summary, and fast.
COLOR_SAMPLE_EDGE = 128
SHARPNESS_SAMPLE_EDGE = 512


class AnalyzeParams(ReportParams):
    pass


def analyze(image: Image.Image, params: AnalyzeParams, progress: ProgressCallback) -> OperationResult:
    luma = image.convert("L")
    stats = ImageStat.Stat(luma)
    report = {
        # load_image records the upload's format; the pixels may have been transposed since.
        "format": image.info.get("source_format") or image.format,
        "mode": image.mode,
        "width": image.width,
        "height": image.height,
        "megapixels": round(image.width * image.height / 1_000_000, 2),
        "has_alpha": "A" in image.getbands(),
        "brightness": round(stats.mean[0], 1),
        "contrast": round(stats.stddev[0], 1),
        "histogram": histograms(image, luma),
    }
    progress(0.4)
    report["dominant_colors"] = dominant_colors(image)
    progress(0.8)
    report["sharpness"] = sharpness(luma)
    progress(1.0)
    return OperationResult(report=report)


def histograms(image: Image.Image, luma: Image.Image) -> dict[str, list[float]]:
    """The share of pixels in each of 16 brightness bins: luma, and each channel of a colour image."""
    channels = {"luma": luma}
    if image.mode in ("RGB", "RGBA"):
        channels.update(zip(("red", "green", "blue"), image.convert("RGB").split(), strict=True))
    pixels = image.width * image.height
    return {name: binned(channel.histogram(), pixels) for name, channel in channels.items()}


def binned(histogram: list[int], pixels: int) -> list[float]:
    counts = np.asarray(histogram).reshape(HISTOGRAM_BINS, -1).sum(axis=1)
    return [round(float(count) / pixels, 4) for count in counts]


def dominant_colors(image: Image.Image) -> list[dict[str, Any]]:
    """The most common colours of a small copy reduced to five, with the share of pixels each covers."""
    sample = downscaled(image.convert("RGB"), COLOR_SAMPLE_EDGE)
    palette_image = sample.quantize(DOMINANT_COLORS, method=Image.Quantize.MEDIANCUT)
    palette = palette_image.getpalette()
    colors = palette_image.getcolors(DOMINANT_COLORS)
    # A quantized image has a palette, and no more colours than it was quantized to.
    assert palette is not None and colors is not None
    total = sample.width * sample.height
    # A palette image's colours are (count, index into the palette).
    counts = sorted(cast(list[tuple[int, int]], colors), reverse=True)
    return [{"hex": hex_color(palette, index), "fraction": round(n / total, 3)} for n, index in counts]


def hex_color(palette: list[int], index: int) -> str:
    red, green, blue = palette[3 * index : 3 * index + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"


def sharpness(luma: Image.Image) -> float:
    """Variance of the Laplacian: high for crisp detail, near zero for a blurred or flat image."""
    gray = np.asarray(downscaled(luma, SHARPNESS_SAMPLE_EDGE), dtype=np.float32)
    if min(gray.shape) < 3:
        return 0.0
    laplacian = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return round(float(laplacian.var()), 1)


def downscaled(image: Image.Image, edge: int) -> Image.Image:
    scale = edge / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


OPERATION = Operation(
    name="analyze",
    description="Report format, dimensions, brightness, contrast, histogram, dominant colours and sharpness.",
    params=AnalyzeParams,
    apply=analyze,
    produces="report",
    ns_per_pixel=19.0,
)
