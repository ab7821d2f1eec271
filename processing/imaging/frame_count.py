"""How many frames an upload holds, from its header and block structure: never its pixels.

A WebP's demuxer counts its frames as Pillow opens it. A GIF has no count: its blocks are walked
to the end, as Pillow's own `n_frames` walks them, but bounded. Pillow's walk reads every
sub-block of every frame's data in Python; a GIF whose data comes in one-byte sub-blocks (25 MB
of them, 12 million) would cost the gateway seconds. This walk stops past MAX_COUNTED_FRAMES and
refuses, as damaged, more sub-blocks than any encoder writes (MIN_BYTES_PER_BLOCK).

Only GIF and WebP are counted: an animated PNG or AVIF, a HEIF sequence or a multi-page TIFF is
read as its first picture (docs/animations.md).
"""

import mmap
from typing import BinaryIO

from PIL import Image

from processing.errors import UnprocessableImage
from processing.imaging.whole_file import whole

# Past this the count stops: MAX_ANIMATION_FRAMES may be at most this, so any count over the
# setting is seen as one.
MAX_COUNTED_FRAMES = 10_000
# Encoders write a GIF's data in sub-blocks of 255 bytes (the largest), each frame's last shorter,
# and a few small blocks per frame (its graphic control extension). Allowing an average of 64 bytes
# and a fixed allowance beside it takes any real GIF; a 25 MB walk then costs at most ~0.1 s.
MIN_BYTES_PER_BLOCK = 64
BLOCK_ALLOWANCE = 100_000

GIF_IMAGE, GIF_EXTENSION, GIF_TRAILER = 0x2C, 0x21, 0x3B
GIF_HEADER_BYTES = 13  # signature, version and the logical screen descriptor


def count_frames(image: Image.Image, fp: BinaryIO) -> int:
    """The frames of the opened `image` (read from `fp`), at most MAX_COUNTED_FRAMES + 1; 1 for a still."""
    if image.format == "WEBP":
        frames: int = getattr(image, "n_frames", 1)
        return min(frames, MAX_COUNTED_FRAMES + 1)
    if image.format == "GIF":
        with whole(fp) as data:
            return gif_frames(data)
    return 1


def gif_frames(data: bytes | mmap.mmap) -> int:
    """The image blocks of the GIF in `data`, up to MAX_COUNTED_FRAMES + 1 (at least 1: Pillow has
    found the first). A byte that starts no block is skipped, as Pillow skips it."""
    position = GIF_HEADER_BYTES + colour_table_bytes(data[10])
    walk = BlockWalk(data)
    frames = 0
    while position < len(data) and frames <= MAX_COUNTED_FRAMES:
        tag = data[position]
        if tag == GIF_TRAILER:
            break
        if tag == GIF_IMAGE:
            frames += 1
            descriptor_end = position + 10
            if descriptor_end > len(data):
                break
            # The local colour table, then the LZW code size, then the data's sub-blocks.
            position = walk.skip_sub_blocks(descriptor_end + colour_table_bytes(data[position + 9]) + 1)
        elif tag == GIF_EXTENSION:
            position = walk.skip_sub_blocks(position + 2)  # after its label
        else:
            position += 1
            walk.count(1)
    return max(frames, 1)


def colour_table_bytes(flags: int) -> int:
    """The size of the colour table a logical screen or image descriptor's flags announce."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


class BlockWalk:
    """Skips sub-blocks, refusing more of them than the file's size allows any encoder to write."""

    def __init__(self, data: bytes | mmap.mmap):
        self.data = data
        self.blocks = 0
        self.limit = len(data) // MIN_BYTES_PER_BLOCK + BLOCK_ALLOWANCE

    def skip_sub_blocks(self, position: int) -> int:
        """The position after the sub-blocks starting at `position` and their terminator."""
        data, size, limit, blocks = self.data, len(self.data), self.limit, self.blocks
        while position < size and blocks <= limit:
            length = data[position]
            position += 1 + length
            blocks += 1
            if not length:
                break
        self.blocks = blocks
        self.count(0)
        return position

    def count(self, blocks: int) -> None:
        self.blocks += blocks
        if self.blocks > self.limit:
            raise UnprocessableImage(
                "corrupt_image",
                f"the GIF is damaged: its data comes in more than {self.limit} blocks, "
                f"far more than any encoder writes in {len(self.data)} bytes",
            )
