"""Uploads are hashed and size-checked as they arrive: held in memory when the whole request is at
most FILE_UPLOAD_MAX_MEMORY_SIZE, streamed to a temporary file on disk otherwise.

A small upload in memory is parsed at a third of the CPU of one written to disk piece by piece
(`make bench-api`'s upload floor: the temporary file, its writes and its rename cost more than the
parsing), and a request holds at most that many bytes; anything larger costs constant memory."""

import hashlib
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import (
    FileUploadHandler,
    MemoryFileUploadHandler,
    TemporaryFileUploadHandler,
)


class UploadTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit} bytes")
        self.limit = limit


class Hashed(FileUploadHandler):
    """What both handlers add to Django's: each file's sha256 and MAX_UPLOAD_BYTES, counted as it arrives."""

    def start_counting(self) -> None:
        self.received = 0
        self.sha256 = hashlib.sha256()

    def count(self, raw_data: bytes) -> None:
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.abandon()
            raise UploadTooLarge(settings.MAX_UPLOAD_BYTES)
        self.sha256.update(raw_data)

    def abandon(self) -> None:
        """Let go of what was received of a file that is refused."""

    def hashed(self, uploaded: UploadedFile | None) -> UploadedFile | None:
        if uploaded is not None:
            # An attribute of ours on Django's file object: processing.jobs.submissions.Upload reads it.
            uploaded.sha256 = self.sha256.hexdigest()  # type: ignore[attr-defined]
        return uploaded


class LimitedMemoryFileUploadHandler(Hashed, MemoryFileUploadHandler):
    """Holds each file in memory when the whole request fits FILE_UPLOAD_MAX_MEMORY_SIZE; else passes
    the request on to the next handler (FILE_UPLOAD_HANDLERS: LimitedTemporaryFileUploadHandler)."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        self.start_counting()
        super().new_file(*args, **kwargs)  # raises StopFutureHandlers when it takes the file

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self.activated:
            self.count(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        return self.hashed(super().file_complete(file_size))


class LimitedTemporaryFileUploadHandler(Hashed, TemporaryFileUploadHandler):
    """Writes each file to disk, never memory."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.start_counting()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.count(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def abandon(self) -> None:
        self.file.close()  # removes the partial temporary file

    def file_complete(self, file_size: int) -> UploadedFile | None:
        return self.hashed(super().file_complete(file_size))
