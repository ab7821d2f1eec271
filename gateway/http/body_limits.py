"""Request bodies: one rule for nginx, the gateway and the batch form."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BodyLimits:
    one_file: int  # a request that carries one upload
    batch: int  # a batch: MAX_BATCH_FILES uploads in one request (the largest body any request may carry)


def body_limits(values: Any) -> BodyLimits:
    """The largest request bodies, from Django's settings or project.config's `load()` values.

    A one-file request may carry MAX_REQUEST_BYTES: its upload plus an allowance for the multipart
    framing and form fields. A batch may carry MAX_BATCH_FILES uploads with that same allowance. nginx
    takes the batch size (it cannot tell the requests apart before reading them); the gateway refuses
    each request past its own size, with a message saying why.
    """
    framing = values.MAX_REQUEST_BYTES - values.MAX_UPLOAD_BYTES
    return BodyLimits(
        one_file=values.MAX_REQUEST_BYTES,
        batch=values.MAX_BATCH_FILES * values.MAX_UPLOAD_BYTES + framing,
    )
