"""The benchmarks' test photo: a generated JPEG that compresses like a photograph, and copies of it
with distinct bytes."""

import io

import numpy as np
from PIL import Image


def photo_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """Gradients, soft light, hard edges and sensor noise: a JPEG that compresses like a photo."""
    rng = np.random.default_rng(20)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    pixels = np.empty((height, width, 3), np.float32)
    pixels[..., 0] = 60 + 150 * x + 0 * y
    pixels[..., 1] = 40 + 120 * y + 0 * x
    pixels[..., 2] = 170 - 90 * x * y + 40 * np.sin(9 * x + 5 * y)
    for _ in range(12):
        cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
        blob = np.exp(-(((x - cx) * width / height) ** 2 + (y - cy) ** 2) / (2 * r * r))
        pixels += blob[..., None] * rng.uniform(-80, 80, 3).astype(np.float32)
    for _ in range(40):
        left, top = rng.integers(0, max(1, width - 50)), rng.integers(0, max(1, height - 50))
        w, h = rng.integers(20, max(21, width // 4)), rng.integers(20, max(21, height // 4))
        pixels[top : top + h, left : left + w] += rng.uniform(-50, 50, 3).astype(np.float32)
    pixels += rng.normal(0, 7, pixels.shape).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def tagged(jpeg: bytes, tag: str) -> bytes:
    """The same pixels with a JPEG comment: distinct bytes, so no upload can reuse another's result."""
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]
