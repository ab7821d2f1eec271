"""An open image file's bytes, whole and uncopied, for the walks that read a header's markers or count
frames: a file on disk is mapped into memory; a small upload already held in memory
(gateway.http.uploads) is read where it is."""

import io
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


@contextmanager
def whole(fp: BinaryIO) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, from its first; it must not be empty (mmap refuses an empty file)."""
    if isinstance(fp, io.BytesIO):
        yield fp.getvalue()  # the buffer itself, not a copy, while nobody writes to it
        return
    with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def size_of(fp: BinaryIO) -> int:
    if isinstance(fp, io.BytesIO):
        return fp.getbuffer().nbytes
    return os.fstat(fp.fileno()).st_size
