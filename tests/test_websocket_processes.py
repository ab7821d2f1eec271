"""Several gateway processes on one port (uvicorn's workers), as `make serve` runs them with
WEB_CONCURRENCY=2: an event reaches a socket whichever process holds it, and a client that
reconnects (to whichever process takes it) gets its job's state with what changed while it was away.

The server names the process behind each socket (GATEWAY_PROCESS_HEADER), so that the test
knows it holds a socket on each process rather than hoping the kernel spread them."""

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests import images
from tests.stack import LiveStack

pytestmark = pytest.mark.services

PROCESS_HEADER = "X-Gateway-Process"
MOST_SOCKETS_TO_FIND_BOTH = 500  # opened until each process holds one; two are enough in practice


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Iterator[LiveStack]:
    with LiveStack(tmp_path_factory.mktemp("two-processes"), GATEWAY_PROCESS_HEADER="true") as stack:
        stack.start_server(workers=2)
        yield stack


def ws_url(stack: LiveStack, path: str) -> str:
    return stack.base_url.replace("http://", "ws://") + path


def process_of(ws: ClientConnection) -> str:
    assert ws.response is not None
    return ws.response.headers[PROCESS_HEADER]


def one_socket_on_each_process(stack: LiveStack, sockets: ExitStack) -> dict[str, ClientConnection]:
    """Caller streams (`WS /ws/jobs/`), each subscribed once its state has come: one per process.
    The others are kept open while searching, so that a busy process is not always the idle one."""
    found: dict[str, ClientConnection] = {}
    for _ in range(MOST_SOCKETS_TO_FIND_BOTH):
        ws = sockets.enter_context(connect(ws_url(stack, "/ws/jobs/")))
        assert json.loads(ws.recv(timeout=30))["type"] == "jobs.state"
        found.setdefault(process_of(ws), ws)
        if len(found) == 2:
            return found
    raise AssertionError(f"{MOST_SOCKETS_TO_FIND_BOTH} sockets all went to {list(found)}")


def next_event_of(ws: ClientConnection, job_id: str) -> dict:
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("job", {}).get("job_id") == job_id:
            return message


def test_an_event_reaches_sockets_on_both_processes_behind_one_port(two_processes):
    with ExitStack() as sockets:
        by_process = one_socket_on_each_process(two_processes, sockets)
        job = two_processes.submit("grayscale", images.jpeg_bytes(images.gradient(64, 48)))

        for ws in by_process.values():
            event = next_event_of(ws, job["job_id"])
            assert (event["type"], event["job"]["status"]) == ("job.queued", "queued")


def test_a_client_that_reconnects_gets_the_state_with_what_changed_while_it_was_away(two_processes):
    job = two_processes.submit("grayscale", images.jpeg_bytes(images.gradient(64, 48)))  # no worker: queued
    path = job["ws_url"]
    with connect(ws_url(two_processes, path)) as ws:
        assert json.loads(ws.recv(timeout=30))["job"]["status"] == "queued"

    with two_processes.client() as client:  # committed while no socket follows the job
        assert client.post(f"/api/v1/jobs/{job['job_id']}/cancel").status_code == 200

    with connect(ws_url(two_processes, path)) as ws:
        state = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert (state["type"], state["job"]["status"]) == ("job.state", "cancelled")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000  # nothing more to follow
