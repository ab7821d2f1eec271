"""libtiff, which decodes Pillow's compressed TIFFs: its errors into logging, and which compressions it has.

libtiff writes its errors to the process's stderr, as plain text without a job: "WEBP compression support
is not configured" was the only trace of why a TIFF failed as "decoder error -2". Pillow offers no hook
(it silences libtiff's warnings and leaves its errors to the default handler), so the copy of libtiff
Pillow is linked with is found among the process's mapped libraries and given an error handler through
ctypes. The handler runs in the thread that decodes, so each message is logged with that thread's job,
and `messages()` collects them for the decode that failed.

On a system where the library can't be found (no /proc), libtiff keeps writing to stderr and every
compression is taken to be available: the decoder's own error then says what it can.
"""

import ctypes
import functools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import PIL
from PIL import Image  # noqa: F401 (Pillow's core module, and libtiff with it, are loaded from here on)

logger = logging.getLogger(__name__)

# void handler(const char *module, const char *format, va_list arguments). On x86-64 and AArch64 a
# va_list argument is passed as a pointer, which vsnprintf takes back as it came.
ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
MESSAGE_BYTES = 1024
# A mapped library's path in /proc/self/maps: libtiff.so.6, or a wheel's libtiff-20b7e810.so.6.3.0.
LIBTIFF_PATH = re.compile(r"/\S*/libtiff(-[0-9a-f]+)?\.so[.0-9]*$")

said_here = threading.local()


@functools.cache
def library() -> ctypes.CDLL | None:
    """The libtiff Pillow's core module is linked with, or None when it can't be found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {Path(found[0]) for line in maps if (found := LIBTIFF_PATH.search(line))}
    except OSError:
        return None
    if not paths:
        return None
    # Pillow's wheels carry a libtiff of their own, beside PIL; another may be loaded for something else.
    installed_with_pillow = Path(PIL.__file__).resolve().parent.parent
    path = min(paths, key=lambda path: not path.is_relative_to(installed_with_pillow))
    try:
        lib = ctypes.CDLL(str(path))
        lib.TIFFIsCODECConfigured.argtypes = [ctypes.c_uint16]
        lib.TIFFIsCODECConfigured.restype = ctypes.c_int
        lib.TIFFSetErrorHandler.argtypes = [ERROR_HANDLER]
        lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
    except (OSError, AttributeError):  # not the library it looked like
        return None
    return lib


@functools.cache
def formatter() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


def on_error(module: bytes | None, format: bytes | None, arguments: int | None) -> None:
    """libtiff's error handler: log the message, and keep it for the decode that is collecting them.

    An exception must not escape into C, where ctypes would print it to stderr."""
    try:
        buffer = ctypes.create_string_buffer(MESSAGE_BYTES)
        formatter().vsnprintf(buffer, MESSAGE_BYTES, format or b"", arguments)
        message = buffer.value.decode(errors="replace").strip()
        logger.warning("libtiff: %s", message)
        collected = getattr(said_here, "messages", None)
        if collected is not None:
            collected.append(message)
    except Exception:  # noqa: BLE001 (see the docstring)
        logger.exception("a libtiff message could not be read")


# Kept for the life of the process: libtiff holds a pointer to it.
HANDLER = ERROR_HANDLER(on_error)


def send_errors_to_logging() -> bool:
    """From now on, libtiff's errors go to logging instead of stderr; False when libtiff was not found."""
    lib = library()
    if lib is None:
        logger.warning("libtiff was not found in this process: its errors go to stderr")
        return False
    lib.TIFFSetErrorHandler(HANDLER)
    return True


@contextmanager
def messages() -> Iterator[list[str]]:
    """The errors libtiff reports in this thread while the block runs (each is logged as well)."""
    collected: list[str] = []
    outer = getattr(said_here, "messages", None)
    said_here.messages = collected
    try:
        yield collected
    finally:
        said_here.messages = outer


def can_decode(compression: int) -> bool:
    """Whether this libtiff has the codec of a TIFF Compression tag value (True when it can't be asked)."""
    lib = library()
    return lib is None or bool(lib.TIFFIsCODECConfigured(compression))
