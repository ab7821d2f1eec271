"""One rule for request bodies (gateway.http.body_limits): nginx, the gateway and the batch form agree.

A batch of MAX_BATCH_FILES uploads of MAX_UPLOAD_BYTES passes nginx's cap and the gateway's; a body
just over is refused with 413 and a message that says what fits.
"""

import asyncio
import json

import pytest
from django.test.client import BOUNDARY, encode_multipart

from gateway.http.body_limits import body_limits
from gateway.http.middleware import RequestBodyLimit
from project import config
from scaler.management.commands.scale_workers import local_gateways


@pytest.fixture
def small_limits(settings):
    settings.MAX_UPLOAD_BYTES = 1000
    settings.MAX_REQUEST_BYTES = 2000  # 1000 bytes for the framing and form fields
    settings.MAX_BATCH_FILES = 3
    return body_limits(settings)


def batch_body(files: int, size: int) -> bytes:
    """A batch as a browser or the JS client sends it: `files` uploads of `size` bytes and a service."""
    uploads = [_Upload(f"image-{n}.png", b"x" * size) for n in range(files)]
    return encode_multipart(BOUNDARY, {"image": uploads, "service": "blur"})


class _Upload:
    """What encode_multipart takes for a file: a name and read()."""

    def __init__(self, name: str, content: bytes):
        self.name, self.content = name, content

    def read(self) -> bytes:
        return self.content


def through_gateway(path: str, body: bytes) -> tuple[int, bytes, int]:
    """POST `body` through the gateway's body limit (ASGI, in pieces, no declared length) to an app
    that reads it all: (status, response body, bytes the app received)."""
    received = 0

    async def app(scope, receive, send):
        nonlocal received
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"accepted"})

    pieces = [body[i : i + 700] for i in range(0, len(body), 700)]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(RequestBodyLimit(app)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), received


def test_a_full_batch_fits_the_batch_limit_but_not_a_one_file_request(small_limits):
    full = batch_body(files=3, size=1000)
    assert small_limits.one_file < len(full) <= small_limits.batch


@pytest.mark.parametrize("path", ["/api/v1/jobs/batch", "/upload"])
def test_a_batch_at_the_limit_reaches_the_app(small_limits, path):
    body = batch_body(files=3, size=1000).ljust(small_limits.batch, b"\n")
    assert len(body) == small_limits.batch
    status, _, received = through_gateway(path, body)
    assert (status, received) == (202, len(body))


@pytest.mark.parametrize("path", ["/api/v1/jobs/batch", "/upload"])
def test_a_batch_one_byte_over_is_refused_saying_what_fits(small_limits, path):
    body = b"x" * (small_limits.batch + 1)
    status, answer, _ = through_gateway(path, body)
    assert status == 413
    error = json.loads(answer)["error"]
    assert error["code"] == "upload_too_large"
    assert error["message"] == (
        f"the request body is larger than the limit of {small_limits.batch} bytes: "
        "a batch of up to 3 files of up to 1000 bytes each"
    )


def test_a_one_file_request_keeps_its_own_smaller_limit(small_limits):
    status, answer, _ = through_gateway("/api/v1/process/blur", b"x" * (small_limits.one_file + 1))
    assert status == 413
    assert json.loads(answer)["error"]["message"].endswith("one file of up to 1000 bytes")
    assert through_gateway("/api/v1/process/blur", b"x" * small_limits.one_file)[0] == 202


def test_a_declared_length_over_the_batch_limit_is_refused_before_reading(client, small_limits):
    response = client.generic(
        "POST",
        "/api/v1/jobs/batch",
        b"",
        CONTENT_TYPE="multipart/form-data",
        CONTENT_LENGTH=str(small_limits.batch + 1),
    )
    assert response.status_code == 413
    assert "a batch of up to 3 files" in response.json()["error"]["message"]


def test_the_scalers_nginx_takes_the_largest_batch(small_limits, tmp_path):
    options = {
        "nginx_prefix": tmp_path,
        "NGINX_LISTEN": "127.0.0.1:0",
        "NGINX_BINARY": "nginx",
        "GATEWAY_PORT_START": 0,
    }
    assert local_gateways(options).nginx.max_body_bytes == small_limits.batch


def test_the_defaults_let_a_batch_of_twenty_25_mb_files_through():
    limits = body_limits(config.defaults())
    assert limits.batch == 20 * 25 * 1024 * 1024 + 1024 * 1024
    assert limits.one_file == 25 * 1024 * 1024 + 1024 * 1024
