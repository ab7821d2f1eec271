"""AVIF and JPEG XL against JPEG on HD photos, and what a result's placeholder costs.

`python -m bench.formats` encodes each photo as Darkroom's worker does (encode_image):
- JPEG at the default quality, and AVIF and JPEG XL at the same quality;
- AVIF and JPEG XL at "equal SSIM": the lowest quality whose SSIM against the photo reaches
  the JPEG's, and its bytes as a share of the JPEG's;
then times placeholders.make on the decoded photo (the BlurHash and the tiny preview).

The photos are generated, as the pipeline benchmark's are: the pipeline's own photo (with sensor
noise, which AVIF smooths away and SSIM counts against it), the same softened, and the softened one
with light noise. `--photos DIR` measures the JPEG and PNG files in DIR instead (real photographs).
"""

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.images import photo_jpeg
from bench.raw import ssim
from processing.imaging import jxl, placeholders
from processing.imaging.codecs import encode_image, set_avif_speed

QUALITY = 85  # the API's default
MODERN = {"avif": "AVIF", "jxl": "JPEG XL"}


def photos(width: int, height: int) -> dict[str, Image.Image]:
    photo = Image.open(io.BytesIO(photo_jpeg(width, height))).convert("RGB")
    soft = photo.filter(ImageFilter.GaussianBlur(1.5))
    noise = np.random.default_rng(1).normal(0, 2, (height, width, 3))
    light_noise = Image.fromarray(np.clip(np.asarray(soft, np.float32) + noise, 0, 255).astype(np.uint8))
    return {"pipeline photo": photo, "softened": soft, "softened + light noise": light_noise}


def photos_in(folder: Path) -> dict[str, Image.Image]:
    found = sorted(path for path in folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return {path.name: Image.open(path).convert("RGB") for path in found}


def likeness(image: Image.Image, format: str, quality: int) -> tuple[int, float, float]:
    """(bytes, SSIM against the image, encode ms) of the image encoded as the worker does."""
    started = time.perf_counter()
    data = encode_image(image, format, quality)
    encode_ms = (time.perf_counter() - started) * 1000
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    return len(data), ssim(image, decoded), encode_ms


def equal_ssim(image: Image.Image, format: str, target: float) -> tuple[int, int, float] | None:
    """(quality, bytes, SSIM) of the lowest quality reaching `target` in `format`, found by bisection
    (SSIM grows with quality, if not always strictly); None if not even quality 100 does."""
    best = None
    low, high = 1, 100
    while low <= high:
        quality = (low + high) // 2
        size, score, _ = likeness(image, format, quality)
        if score >= target:
            best, high = (quality, size, score), quality - 1
        else:
            low = quality + 1
    return best


def placeholder_ms(image: Image.Image, repeats: int) -> float:
    placeholders.make(image)  # the first call loads the BlurHash library
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        placeholders.make(image)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def report(name: str, image: Image.Image, repeats: int) -> str:
    jpeg_bytes, jpeg_ssim, jpeg_ms = likeness(image, "jpeg", QUALITY)
    lines = [
        f"{name} ({image.width}×{image.height})",
        f"  JPEG q{QUALITY}: {jpeg_bytes:>9,} bytes  SSIM {jpeg_ssim:.4f}  {jpeg_ms:6.1f} ms",
    ]
    for format, label in MODERN.items():
        lines += against_jpeg(image, format, label, jpeg_bytes, jpeg_ssim)
    lines.append(f"  placeholder (BlurHash + preview): {placeholder_ms(image, repeats):.2f} ms median")
    return "\n".join(lines)


def against_jpeg(image: Image.Image, format: str, label: str, jpeg_bytes: int, jpeg_ssim: float) -> list[str]:
    """The format at the JPEG's quality, and at the JPEG's SSIM, in bytes as a share of the JPEG's."""
    size, score, ms = likeness(image, format, QUALITY)
    lines = [
        f"  {label} q{QUALITY}: {size:>9,} bytes  SSIM {score:.4f}  {ms:6.1f} ms"
        f"  ({size / jpeg_bytes:.2f}× the JPEG's bytes)"
    ]
    equal = equal_ssim(image, format, jpeg_ssim)
    if equal is None:
        lines.append(f"  {label} at equal SSIM: no quality up to 100 reaches {jpeg_ssim:.4f}")
    else:
        quality, size, score = equal
        lines.append(
            f"  {label} at equal SSIM: q{quality}, {size:,} bytes, SSIM {score:.4f}: "
            f"{size / jpeg_bytes:.2f}× the JPEG's bytes"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--repeats", type=int, default=20, help="placeholder timings per photo")
    parser.add_argument("--photos", type=Path, help="a folder of JPEG and PNG photos to measure instead")
    parser.add_argument("--avif-speed", type=int, help="the AVIF encoder's speed, 0-10 (AVIF_SPEED)")
    parser.add_argument("--jxl-effort", type=int, help="the JPEG XL encoder's effort, 1-9 (JXL_EFFORT)")
    args = parser.parse_args(argv)
    if args.avif_speed is not None:
        set_avif_speed(args.avif_speed)
    if args.jxl_effort is not None:
        jxl.set_effort(args.jxl_effort)
    chosen = photos_in(args.photos) if args.photos else photos(args.width, args.height)
    for name, image in chosen.items():
        print(report(name, image, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
