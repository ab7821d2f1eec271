"""Uploads stream to a temporary file on disk, hashed and size-checked as they arrive."""

import hashlib
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class UploadTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit} bytes")
        self.limit = limit


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Writes each file to disk (never memory), computes its sha256 and stops at MAX_UPLOAD_BYTES."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0
        self.sha256 = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.file.close()  # removes the partial temporary file
            raise UploadTooLarge(settings.MAX_UPLOAD_BYTES)
        self.sha256.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile:
        uploaded = super().file_complete(file_size)
        assert uploaded is not None  # the temporary file handler always completes a file
        # An attribute of ours on Django's file object: processing.jobs.submissions.Upload reads it.
        uploaded.sha256 = self.sha256.hexdigest()  # type: ignore[attr-defined]
        return uploaded
