"""bench.http_client, the benchmarks' load client: the upload it encodes once is the one the server
parses, its connection is kept alive and opened again when the server closes it, redirects are
followed, and a request that gets no answer is an error the benchmark counts."""

import hashlib
import io
import json
import socket
import threading

import pytest
from django.test import RequestFactory
from PIL import Image

from bench.http_client import Client, ClientError, form
from bench.pipeline import LONG_POLL_S, Waiting, fetch_results, job_upload, run_concurrently, run_job
from tests.images import gradient, jpeg_bytes
from tests.scripted_server import Answer, ScriptedServer, Seen


def ok(request: Seen, seen: list[Seen]) -> Answer:
    return Answer.of_json({"path": request.path})


# --- the upload, encoded once ------------------------------------------------------------
def test_django_parses_the_encoded_body_into_the_same_fields_and_the_same_file():
    image = jpeg_bytes(gradient(64, 48))
    steps = json.dumps([{"service": "resize", "parameters": {"width": "32"}}, {"service": "grayscale"}])
    body = form(
        {"steps": steps, "quality": 70, "note": 'a "quoted"\r\nline, é'},
        {"image": ("a.jpg", image, "image/jpeg")},
    )

    request = RequestFactory().generic("POST", "/", body.content, content_type=body.content_type)

    assert request.POST.dict() == {"steps": steps, "quality": "70", "note": 'a "quoted"\r\nline, é'}
    upload = request.FILES["image"]
    assert (upload.name, upload.content_type, upload.read()) == ("a.jpg", "image/jpeg", image)


def test_each_body_has_a_boundary_of_its_own_that_its_content_type_names():
    first, second = (form({"width": "80"}, {}) for _ in range(2))
    assert first.content_type != second.content_type
    boundary = first.content_type.removeprefix("multipart/form-data; boundary=")
    assert first.content.startswith(f"--{boundary}\r\n".encode())
    assert first.content.endswith(f"--{boundary}--\r\n".encode())


@pytest.mark.services
@pytest.mark.parametrize(
    ("service", "params", "size"),
    [
        ("resize", {"width": "80", "quality": "70"}, (80, 60)),
        (
            "steps",
            {
                "steps": json.dumps(
                    [{"service": "resize", "parameters": {"width": "40"}}, {"service": "grayscale"}]
                )
            },
            (40, 30),
        ),
    ],
)
def test_the_server_takes_the_encoded_upload_as_the_job_its_parameters_and_image_say(
    live_stack, worker, service, params, size
):
    image = jpeg_bytes(gradient(160, 120))
    with Client(live_stack.base_url, timeout=60) as client:
        job = run_job(
            client,
            service,
            job_upload(image, params),
            Waiting("one-request"),
            threading.Event(),
            keep_content=True,
        )
        assert job.ok and job.in_one, job.error
        parameters = client.get(f"/api/v1/jobs/{job.job_id}").json()["parameters"]
    fetch_results(live_stack.base_url, [job])
    assert job.result["input"]["sha256"] == hashlib.sha256(image).hexdigest()  # the file, byte for byte
    assert Image.open(io.BytesIO(job.content)).size == size
    if service == "resize":
        assert (parameters["width"], parameters["quality"]) == (80, 70)
    else:
        assert [step["service"] for step in parameters["steps"]] == ["resize", "grayscale"]


# --- the connection ----------------------------------------------------------------------
def test_requests_one_after_another_share_one_connection():
    with ScriptedServer(ok) as server, Client(server.url, timeout=10) as client:
        answers = [client.get(f"/{number}").json()["path"] for number in range(3)]
        client.post("/upload", form({"a": "1"}, {}))
    assert answers == ["/0", "/1", "/2"]
    assert [r.connection for r in server.seen] == [1, 1, 1, 1]


def test_a_connection_the_server_closed_after_an_answer_is_opened_again_for_the_next_request():
    def closing(request: Seen, seen: list[Seen]) -> Answer:
        return Answer.of_json({"path": request.path}, status=200) if len(seen) > 1 else Answer(close=True)

    with ScriptedServer(closing) as server, Client(server.url, timeout=10) as client:
        client.get("/first")
        second = client.get("/second")
    assert second.status_code == 200 and second.json() == {"path": "/second"}
    assert server.seen[-1].connection == 2


def test_a_request_the_server_drops_on_a_kept_alive_connection_is_sent_again_on_a_new_one():
    def dropping(request: Seen, seen: list[Seen]) -> Answer:
        # The second request on the first connection is dropped unanswered, as when a keep-alive
        # timeout closes the connection just as the request arrives.
        if request.connection == 1 and len(seen) == 2:
            return Answer(hang_up=True)
        return Answer.of_json({"path": request.path})

    with ScriptedServer(dropping) as server, Client(server.url, timeout=10) as client:
        client.get("/first")
        answer = client.post("/second", form({"width": "80"}, {}))
    assert answer.json() == {"path": "/second"}
    assert [(r.path, r.connection) for r in server.seen] == [("/first", 1), ("/second", 1), ("/second", 2)]
    assert server.seen[1].body == server.seen[2].body


def test_a_request_dropped_on_a_new_connection_is_an_error_and_is_not_sent_twice():
    with (
        ScriptedServer(lambda request, seen: Answer(hang_up=True)) as server,
        Client(server.url, timeout=10) as client,
        pytest.raises(ClientError) as raised,
    ):
        client.post("/api/v1/process/grayscale", form({}, {}))
    assert "RemoteDisconnected" in str(raised.value)
    assert len(server.seen) == 1


def test_a_server_that_does_not_answer_within_the_timeout_is_an_error():
    hold = threading.Event()
    with ScriptedServer(lambda request, seen: Answer(hold=hold)) as server:
        try:
            with Client(server.url, timeout=0.2) as client, pytest.raises(ClientError) as raised:
                client.get("/api/v1/jobs/j1", params={"wait": LONG_POLL_S})
        finally:
            hold.set()
    assert "timed out" in str(raised.value)


# --- redirects -------------------------------------------------------------------------------
def test_a_redirect_is_followed_only_when_asked():
    def moved(request: Seen, seen: list[Seen]) -> Answer:
        if request.path == "/old":
            return Answer(302, {"Location": "/new?signature=abc"})
        return Answer(200, {"Content-Type": "image/jpeg"}, b"the result")

    with ScriptedServer(moved) as server, Client(server.url, timeout=10) as client:
        assert client.get("/old").status_code == 302
        followed = client.get("/old", follow_redirects=True)
    assert (followed.status_code, followed.content, followed.path) == (200, b"the result", "/new")
    assert server.seen[-1].params == {"signature": "abc"}


def test_redirects_that_never_end_are_an_error():
    with (
        ScriptedServer(lambda request, seen: Answer(302, {"Location": "/again"})) as server,
        Client(server.url, timeout=10) as client,
        pytest.raises(ClientError) as raised,
    ):
        client.get("/again", follow_redirects=True)
    assert "more than 20 redirects" in str(raised.value)


# --- in the benchmark's run ----------------------------------------------------------------
def test_a_refused_connection_makes_each_job_a_failure_of_the_run_not_a_crash():
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        results = run_concurrently(
            base_url,
            range(3),
            2,
            lambda client, item, stop: client.get(f"/{item}"),
            lambda exc, started: f"failed: {exc}",
        )
    assert len(results) == 3
    assert all(result.startswith("failed: GET ") and "ConnectionRefusedError" in result for result in results)
