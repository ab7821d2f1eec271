"""The synchronous Django app as the ASGI server reaches it (gateway.http.wsgi_threads): a response
held whole is sent in one piece from the event loop, a streamed one as it comes, and request
bodies, errors and the request's context reach the app as they did through a2wsgi."""

import contextvars
import io
import os

import pytest
from channels.db import database_sync_to_async
from django.core.wsgi import get_wsgi_application

from gateway.http.wsgi_threads import FILE_PIECE, ThreadedWsgi
from processing import storage
from processing.models import Job
from tests.factories import stored_job

pytestmark = pytest.mark.anyio

THREADS = 2


@pytest.fixture
def anyio_backend():
    return "asyncio"


def scope(method: str = "GET", path: str = "/", headers: list | None = None) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def exchange(app, request: dict, body_pieces: tuple[bytes, ...] = (b"",)) -> list[dict]:
    """Every message the app sends for `request`, whose body comes in `body_pieces`."""
    incoming = [
        {"type": "http.request", "body": piece, "more_body": i < len(body_pieces) - 1}
        for i, piece in enumerate(body_pieces)
    ]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await ThreadedWsgi(app, workers=THREADS)(request, receive, send)
    return sent


def body_of(messages: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def test_a_response_held_whole_is_sent_as_one_start_and_one_body():
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thing", "1")])
        return [b"hello ", b"world"]

    sent = await exchange(app, scope())

    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"text/plain"), (b"x-thing", b"1")],
        },
        {"type": "http.response.body", "body": b"hello world"},
    ]


async def test_a_django_view_answers_through_it(db):
    sent = await exchange(get_wsgi_application(), scope(path="/health/live"))

    assert sent[0]["status"] == 200
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert body_of(sent) == b'{"status": "ok"}'
    assert len(sent) == 2  # held whole: one start, one body


async def test_a_streamed_response_is_sent_piece_by_piece_in_order():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        yield from (b"one", b"", b"two", b"three")

    sent = await exchange(app, scope())

    assert sent[0]["type"] == "http.response.start"
    assert [m["body"] for m in sent[1:]] == [b"one", b"two", b"three", b""]
    assert [m.get("more_body", False) for m in sent[1:]] == [True, True, True, False]


async def test_the_app_reads_a_body_that_comes_in_pieces():
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    pieces = (b"a" * 70_000, b"b" * 70_000, b"c")
    headers = [(b"host", b"testserver"), (b"content-length", b"140001")]
    sent = await exchange(app, scope("POST", headers=headers), pieces)

    assert body_of(sent) == b"".join(pieces)


async def test_an_error_in_the_app_reaches_the_server():
    def app(environ, start_response):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await exchange(app, scope())


request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


async def test_the_app_runs_in_the_context_of_its_request():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [request_var.get().encode()]

    request_var.set("this request")
    assert body_of(await exchange(app, scope())) == b"this request"


def file_app(data: bytes):
    """An app that answers with a file through the server's wsgi.file_wrapper, as Django's FileResponse."""
    closed = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(data)))])
        file = io.BytesIO(data)
        file.close = lambda: closed.append(True)
        return environ["wsgi.file_wrapper"](file, 4096)

    return app, closed


async def test_a_file_of_one_piece_is_sent_whole_and_closed():
    data = os.urandom(300_000)
    app, closed = file_app(data)

    sent = await exchange(app, scope())

    assert len(sent) == 2 and body_of(sent) == data
    assert closed == [True]


async def test_a_larger_file_is_sent_in_pieces_of_at_most_file_piece_bytes_and_closed():
    data = os.urandom(2 * FILE_PIECE + 123)
    app, closed = file_app(data)

    sent = await exchange(app, scope())

    assert body_of(sent) == data
    assert [len(m["body"]) for m in sent[1:]] == [FILE_PIECE, FILE_PIECE, 123, 0]
    assert closed == [True]


async def test_a_result_download_arrives_whole_with_its_exact_bytes(db):
    data = os.urandom(250_000)
    job = await database_sync_to_async(completed_job)(data)

    sent = await exchange(get_wsgi_application(), scope(path=f"/api/v1/download/{job.id}"))

    assert sent[0]["status"] == 200
    assert body_of(sent) == data
    assert len(sent) == 2  # one hop from the request's thread, not one per 4 KiB


def completed_job(output: bytes) -> Job:
    job = stored_job(status=Job.COMPLETED, output_format="jpeg")
    job.output_key = storage.save_output(storage.output_key(str(job.id), "jpg"), output)
    job.save(update_fields=["output_key"])
    return job
