"""Small generated test images: PIL images to operate on, and encoded bytes to upload.

Functions named after an image return a PIL image; `*_bytes` functions return an encoded file.
Everything is generated, so tests never depend on fixture files or on the network.
"""

import io
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from bench.raw import ssim  # noqa: F401  (the benchmark and the tests measure likeness alike)
from processing.imaging import codecs  # noqa: F401  (registers the HEIF codec, which tests encode with)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

# EXIF Orientation 6: the camera was turned clockwise; viewers rotate the pixels 90 degrees clockwise.
ROTATE_CLOCKWISE = 6
GPS_LATITUDE = (48.0, 51.0, 29.76)  # Paris: where a leak would point


# Images


def gradient(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """Red rises left to right, green top to bottom, blue is constant; in L, a left-to-right ramp."""
    xs = np.linspace(0, 255, width, dtype=np.float32)
    ys = np.linspace(0, 255, height, dtype=np.float32)
    red = np.broadcast_to(xs, (height, width))
    if mode == "L":
        return Image.fromarray(red.astype(np.uint8), "L")
    green = np.broadcast_to(ys[:, None], (height, width))
    blue = np.full((height, width), 128, dtype=np.float32)
    rgb = Image.fromarray(np.dstack([red, green, blue]).astype(np.uint8), "RGB")
    return rgb.convert(mode)


def checkerboard(width: int = 64, height: int = 64, square: int = 8, mode: str = "L") -> Image.Image:
    """Black and white squares of `square` pixels, starting black at the top-left."""
    ys, xs = np.indices((height, width))
    cells = ((ys // square + xs // square) % 2 * 255).astype(np.uint8)
    return Image.fromarray(cells, "L").convert(mode)


def solid(width: int = 32, height: int = 32, color=WHITE, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (width, height), color)


def two_colors(
    width: int = 40, height: int = 10, left=RED, right=BLUE, left_fraction: float = 0.75
) -> Image.Image:
    """`left` fills the first `left_fraction` of the columns, `right` the rest."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, round(width * left_fraction), height))
    return image


def color_blocks(colors=(RED, GREEN, BLUE, WHITE), block: int = 16) -> Image.Image:
    """Square blocks of each colour side by side, `block` pixels each."""
    image = Image.new("RGB", (block * len(colors), block))
    for index, color in enumerate(colors):
        image.paste(color, (index * block, 0, (index + 1) * block, block))
    return image


def step_edge(width: int = 32, height: int = 16, at: int = 16, low: int = 0, high: int = 255) -> Image.Image:
    """A vertical edge: columns before `at` are `low`, from `at` on `high` (mode L)."""
    image = Image.new("L", (width, height), low)
    image.paste(high, (at, 0, width, height))
    return image


def noise(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    """Random RGB pixels: incompressible, so an encoded file has data all the way through."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """Soft gradients, blurred blobs, hard-edged patches and sensor noise: resamples like a photo."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    pixels = 60 + 150 * x * np.array([1.0, 0.2, 0.5], np.float32) + 120 * y * np.array([0.1, 1.0, 0.3])
    for _ in range(8):
        cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
        pixels = pixels + np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)) * rng.uniform(-80, 80, 3)
    for _ in range(20):
        left, top = rng.integers(0, width - 8), rng.integers(0, height - 8)
        pixels[top : top + rng.integers(8, height // 3), left : left + rng.integers(8, width // 3)] += (
            rng.uniform(-50, 50, 3)
        )
    pixels = pixels + rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def marked(width: int = 40, height: int = 20) -> Image.Image:
    """White, wider than tall, with a red square in the top-left corner to tell rotations apart."""
    image = Image.new("RGB", (width, height), WHITE)
    image.paste(RED, (0, 0, height // 2, height // 2))
    return image


def logo(width: int = 40, height: int = 20) -> Image.Image:
    """RGBA: the left half opaque blue, the right half wholly transparent green (green shows only if
    the transparency is lost)."""
    image = Image.new("RGBA", (width, height), (0, 255, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, width // 2, height))
    return image


def with_alpha(image: Image.Image, alpha: int = 128) -> Image.Image:
    """The image as RGBA with a uniform alpha."""
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


# Encoded files


def encode(image: Image.Image, format: str, **params) -> bytes:
    """The image saved with Pillow in `format` ("JPEG", "PNG", ...) with any save parameters."""
    out = io.BytesIO()
    image.save(out, format, **params)
    return out.getvalue()


def jpeg_bytes(image: Image.Image | None = None, quality: int = 95) -> bytes:
    return encode(image or gradient(), "JPEG", quality=quality)


def png_bytes(image: Image.Image | None = None) -> bytes:
    return encode(image or gradient(), "PNG")


def bytes_in_each_input_format(image: Image.Image | None = None) -> dict[str, bytes]:
    """The same image encoded in every allowed input format, keyed by Pillow format name."""
    image = image or gradient()
    return {name: encode(image, name) for name in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")}


def oriented_jpeg_bytes(orientation: int = ROTATE_CLOCKWISE, image: Image.Image | None = None) -> bytes:
    """A JPEG of `marked()` (40x20 stored) whose EXIF tells viewers to apply `orientation`."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(image or marked(), "JPEG", quality=95, exif=exif)


def camera_exif() -> Image.Exif:
    """EXIF as a phone writes it: make, model, date and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Darkroom Test Camera"
    exif[ExifTags.Base.Model] = "Leaky 1"
    exif[ExifTags.Base.DateTime] = "2024:05:01 12:00:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 7.92)
    return exif


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description creator="leak"/></rdf:RDF></x:xmpmeta>'


def with_metadata_bytes(format: str = "JPEG", image: Image.Image | None = None) -> bytes:
    """An image carrying EXIF with GPS, an sRGB ICC profile, XMP and (JPEG, PNG) a comment."""
    image = image or gradient()
    params = {"exif": camera_exif(), "icc_profile": srgb_icc()}
    if format == "JPEG":
        params.update(comment=b"shot at home", xmp=XMP, quality=95)
    elif format in ("WEBP", "HEIF", "AVIF", "JXL"):
        params.update(xmp=XMP, quality=95)
        if format == "JXL":  # the JPEG XL plugin takes EXIF as bytes only, and writes no ICC profile
            params["exif"] = camera_exif().tobytes()
    elif format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        text = PngInfo()
        text.add_text("Comment", "shot at home")
        text.add_itxt("XML:com.adobe.xmp", XMP.decode())
        params["pnginfo"] = text
    return encode(image, format, **params)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def swapped_primaries_icc() -> bytes:
    """An RGB display profile whose red and green primaries are swapped (gamma 2.2).

    Pure red stored under this profile is green on screen, so a test can tell at a glance
    whether the profile was applied.
    """
    # sRGB colorants adapted to D50, as ICC v2 profiles store them.
    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    return icc_profile("Swapped red and green", red=green, green=red, blue=blue, gamma=2.2)


def icc_profile(description: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile."""

    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    ascii_text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0No copyright\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(28)
        + struct.pack(">3i", *(round(v * 65536) for v in (0.9642, 1.0, 0.8249)))
        + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def swapped_primaries_png_bytes(color=RED) -> bytes:
    """A solid image of `color` tagged with `swapped_primaries_icc()`."""
    return encode(solid(16, 16, color), "PNG", icc_profile=swapped_primaries_icc())


def truncated_jpeg_bytes() -> bytes:
    """The first half of a JPEG of noise: the header is intact, the scan data stops early."""
    data = encode(noise(64, 64), "JPEG", quality=90)
    return data[: len(data) // 2]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_bytes(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) but holds a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(bytes(4 * width)))
        + png_chunk(b"IEND", b"")
    )


# Hostile files: small, and each one a large cost for whoever decodes it carelessly


def gif_header_bytes(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose screen and first frame claim width x height, with one byte of image data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + frame + b"\x08\x01\x00\x00\x3b"


def bmp_header_bytes(width: int = 30000, height: int = 30000) -> bytes:
    """A 24-bit BMP whose header claims width x height, with a few bytes of pixels."""
    pixels = bytes(16)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    file_header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return file_header + info + pixels


def tiff_header_bytes(width: int = 30000, height: int = 30000) -> bytes:
    """An uncompressed 8-bit greyscale TIFF whose tags claim width x height, with a few bytes of pixels."""
    tags = [  # (tag, type SHORT=3 / LONG=4, value)
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),  # the strip starts right after the 8-byte header
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + 16) + bytes(16) + ifd


def cut_jpeg_bytes(length: int = 250) -> bytes:
    """The first `length` bytes of a photo's JPEG: cut inside its header (quantisation and Huffman tables)."""
    return jpeg_bytes(photo(64, 64))[:length]


def cut_png_bytes(length: int = 20) -> bytes:
    """The first `length` bytes of a PNG: 20 cuts its header chunk, 60 its pixel data."""
    return png_bytes(photo(64, 64))[:length]


def png_bomb_bytes(kind: bytes = b"zTXt", after_pixels: bool = False) -> bytes:
    """An 8x8 PNG with a zTXt, iTXt or iCCP chunk of 50 MB of zeros compressed to about 50 KB."""
    payload = zlib.compress(bytes(50_000_000), 9)
    body = {b"zTXt": b"note\x00\x00", b"iTXt": b"note\x00\x01\x00\x00\x00", b"iCCP": b"icc\x00\x00"}[kind]
    chunk = png_chunk(kind, body + payload)
    data = png_bytes(gradient(8, 8))
    at = data.index(b"IEND") - 4 if after_pixels else 33  # 33: just after the IHDR chunk
    return data[:at] + chunk + data[at:]


def jpeg_with_empty_segments(count: int, stray: bytes = b"") -> bytes:
    """A 64x64 photo's JPEG with `count` empty APP15 segments (4 bytes each) after its SOI, then `stray`
    bytes (fill or junk) before its own segments. 250,000 segments make a megabyte whose header Pillow
    took 0.38 s to walk."""
    data = jpeg_bytes(photo(64, 64))
    return data[:2] + b"\xff\xef\x00\x02" * count + stray + data[2:]


def many_scans_jpeg_bytes(scans: int = 20_000, width: int = 256, height: int = 256) -> bytes:
    """A progressive JPEG with one of its (12-byte) scans repeated until it has `scans` of them.

    Decoding makes a pass over the whole image per scan: at 4000x4000 and 20,000 scans, about 250 KB
    that take minutes to decode.
    """
    data = encode(solid(width, height, (90, 140, 200)), "JPEG", progressive=True, quality=90)
    start, end = smallest_scan(data)
    present = data.count(b"\xff\xda")
    return data[:end] + data[start:end] * (scans - present) + data[end:]


def smallest_scan(data: bytes) -> tuple[int, int]:
    """(start, end) of the JPEG's shortest scan: its SOS segment and its entropy-coded data."""
    found, position = [], 2
    while data[position + 1] != 0xD9:
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if data[position + 1] == 0xDA:
            end = next(
                i
                for i in range(end, len(data) - 1)
                if data[i] == 0xFF and data[i + 1] not in (0, *range(0xD0, 0xD8))
            )
            found.append((end - position, position, end))
        position = end
    _, start, end = min(found)
    return start, end


def animated_gif_bytes(colors=(RED, GREEN, BLUE), size: int = 16) -> bytes:
    """One frame per colour; the first frame is `colors[0]`."""
    frames = [solid(size, size, color) for color in colors]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


# An animation's frames: each a colour of its own, in this order.
FRAME_COLORS = (RED, GREEN, BLUE, (255, 200, 0))
FRAME_DURATIONS = [80, 120, 160, 200]  # milliseconds, each a whole number of a GIF's 10 ms ticks


def animation_frames(colors=FRAME_COLORS, width: int = 48, height: int = 32, alpha: bool = False) -> list:
    """One frame per colour, each with a white block at its top left (so that a turn or a crop shows);
    with `alpha`, RGBA frames with a transparent block that moves right a little each frame."""
    frames = []
    for index, color in enumerate(colors):
        frame = Image.new("RGBA" if alpha else "RGB", (width, height), color)
        frame.paste(WHITE, (0, 0, width // 4, height // 4))
        if alpha:
            left = width // 2 + 3 * index
            frame.paste((0, 0, 0, 0), (left, height // 2, left + 8, height // 2 + 8))
        frames.append(frame)
    return frames


def animated_bytes(format: str, frames=None, durations=None, loop: int | None = 0, **params) -> bytes:
    """An animated GIF or WebP of `frames` (animation_frames() by default); loop None: a GIF playing once."""
    frames = frames or animation_frames()
    options = {"duration": durations or FRAME_DURATIONS[: len(frames)], **params}
    if loop is not None:
        options["loop"] = loop
    return encode(frames[0], format, save_all=True, append_images=frames[1:], **options)


def multipage_tiff_bytes(colors=(RED, GREEN, BLUE), size: int = 16) -> bytes:
    """One page per colour; the first page is `colors[0]`."""
    pages = [solid(size, size, color) for color in colors]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def sixteen_bit_png_bytes(width: int = 64, height: int = 8) -> bytes:
    """A 16-bit greyscale ramp from 0 to 65535, left to right."""
    ramp = np.broadcast_to(np.linspace(0, 65535, width).astype(np.uint16), (height, width))
    return encode(Image.fromarray(np.ascontiguousarray(ramp)), "PNG")


def cmyk_jpeg_bytes(cmyk=(0, 255, 255, 0), size: int = 16) -> bytes:
    """A CMYK JPEG; the default colour is red (no cyan, full magenta and yellow)."""
    return encode(Image.new("CMYK", (size, size), cmyk), "JPEG", quality=95)


def transparent_palette_png_bytes(size: int = 16) -> bytes:
    """A palette PNG: left half transparent, right half opaque red."""
    image = Image.new("P", (size, size), 0)
    image.putpalette([*WHITE, *RED])
    image.paste(1, (size // 2, 0, size, size))
    return encode(image, "PNG", transparency=0)


def one_bit_png_with_a_transparent_level_bytes(size: int = 16) -> bytes:
    """A 1-bit greyscale PNG, left half black, right half white, white transparent (tRNS)."""
    image = Image.new("1", (size, size), 0)
    image.paste(1, (size // 2, 0, size, size))
    return encode(image, "PNG", transparency=255)


def sixteen_bit_png_with_a_transparent_level_bytes(transparent: int = 255) -> bytes:
    """A 16-bit greyscale PNG of four samples, 0, `transparent`, 32768 and 65535, the second transparent."""
    samples = np.array([[0, transparent, 32768, 65535]], dtype=np.uint16)
    return encode(Image.fromarray(samples), "PNG", transparency=transparent)


def oriented_tiff_bytes(orientation: int = ROTATE_CLOCKWISE, image: Image.Image | None = None) -> bytes:
    """A 40 x 20 TIFF (LZW) with an Orientation tag: with 6, displayed 20 x 40."""
    return encode(
        image or marked(), "TIFF", compression="tiff_lzw", tiffinfo={ExifTags.Base.Orientation: orientation}
    )


def xmp_oriented_png_bytes(orientation: int = ROTATE_CLOCKWISE, image: Image.Image | None = None) -> bytes:
    """A 40 x 20 PNG whose orientation is in its XMP (a text chunk before the pixels), as editors write it."""
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    return encode(image or marked(), "PNG", pnginfo=info)


def damaged_lzw_tiff_bytes(size: int = 64) -> bytes:
    """An LZW TIFF with a sound header and a scrambled strip, which libtiff refuses to decode."""
    data = bytearray(encode(noise(size, size), "TIFF", compression="tiff_lzw"))
    header = Image.open(io.BytesIO(data))
    start, length = header.tag_v2[273][0], header.tag_v2[279][0]  # StripOffsets, StripByteCounts
    for at in range(start + 4, start + min(length, 200)):
        data[at] ^= 0x5A
    return bytes(data)


def png_with_a_broken_header_bytes() -> bytes:
    """A PNG whose header chunk fails its checksum: a PNG, damaged."""
    data = bytearray(png_bytes(solid(8, 8)))
    data[29] ^= 0xFF  # the IHDR chunk's CRC, after the signature (8) and the chunk (8 + 13)
    return bytes(data)


def bmp_holding_bytes(inner: bytes, compression: int = 5, bits: int = 0) -> bytes:
    """A BMP (version 5 header) whose pixels are another file: a PNG with compression 5 (BI_PNG), a
    JPEG with 4. With other values, a BMP header saying so, followed by `inner`."""
    info = struct.pack("<IiiHHII", 124, 8, 8, 1, bits, compression, len(inner)).ljust(124, b"\0")
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(inner), 0, 0, offset) + info + inner


# Files that must never be decoded


def eps_bytes() -> bytes:
    """A real EPS file (PostScript, which Pillow would hand to Ghostscript)."""
    return encode(solid(8, 8), "EPS")


def pdf_bytes() -> bytes:
    return encode(solid(8, 8), "PDF")


def svg_bytes() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def text_bytes() -> bytes:
    return b"this is a text file, not an image\n"
