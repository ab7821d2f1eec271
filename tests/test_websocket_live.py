"""Live job status as a client sees it: a real uvicorn server, channels-redis, Dramatiq workers,
and a real WebSocket client."""

import asyncio
import io
import json
import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from processing.events.layer import WS_DROPPED, RedisChannelLayer
from processing.events.messages import ENDED_GROUP, LISTENERS_GROUP, owner_group
from processing.owners import ANONYMOUS
from tests import images
from tests.services import IN_CI, require
from tests.stack import MANAGE, LiveStack, start_on_a_free_port

pytestmark = pytest.mark.services

ANONYMOUS_GROUP = owner_group(ANONYMOUS)  # the group of the anonymous sockets below


def api_key(stack: LiveStack) -> str:
    command = [*MANAGE, "create_api_key", "live-test"]
    return subprocess.run(command, env=stack.env, capture_output=True, text=True, check=True).stdout.strip()


def ws_url(stack: LiveStack, path: str) -> str:
    return stack.base_url.replace("http://", "ws://") + path


def until_closed(ws) -> tuple[list[dict], int, str]:
    """Every message the server sends, then the close code and reason it sent."""
    received = []
    try:
        while True:
            received.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosed as closed:
        return received, closed.rcvd.code, closed.rcvd.reason


def test_a_client_watches_its_job_over_a_websocket_until_it_can_download_the_result(live_stack):
    key = api_key(live_stack)
    headers = {"X-API-Key": key}
    with live_stack.client() as client:
        image = images.jpeg_bytes(images.gradient(640, 480))
        submitted = client.post(
            "/api/v1/process/grayscale", files={"image": ("a.jpg", image)}, headers=headers
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()

        # As a browser would: the key as a subprotocol. No worker yet, so it is still queued.
        protocols = ["darkroom", f"darkroom.key.{key}"]
        with connect(ws_url(live_stack, job["ws_url"]), subprotocols=protocols) as ws:
            assert ws.subprotocol == "darkroom"
            live_stack.start_worker("ws-worker")
            try:
                received, code, reason = until_closed(ws)
            finally:
                live_stack.stop("ws-worker")

        assert [m["type"] for m in received[:2]] == ["job.state", "job.processing"], received
        assert received[0]["job"]["status"] == "queued"
        assert received[-1]["type"] == "job.completed", received
        assert (code, reason) == (1000, "job finished")
        download = client.get(received[-1]["job"]["result"]["url"], headers=headers)

    assert download.status_code == 200
    assert Image.open(io.BytesIO(download.content)).mode == "L"


# --- With a Redis of our own, to stop and to flood without touching anyone else's ----------


@pytest.fixture(scope="module")
def own_redis():
    """A private, throwaway redis-server: `stop()` kills it, `start()` brings it back."""
    if not shutil.which("redis-server"):
        message = "needs redis-server on the PATH"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


class PrivateRedis:
    """On a port found free at the first start (another one if it was taken meanwhile); the same port
    at each later start, as the stack's REDIS_URL names it."""

    def __init__(self):
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.port:
            assert self._start_on(self.port), f"redis-server could not listen on {self.port} again"
            return
        _, self.port = start_on_a_free_port(self._start_on)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _start_on(self, port: int) -> subprocess.Popen | None:
        command = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 60
        while self.process.poll() is None:
            if served_by(url, self.process.pid):
                return self.process
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        return None  # it exited: the port was taken

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def served_by(url: str, pid: int) -> bool:
    """Whether the Redis at `url` is the process `pid` (and not another that holds the port)."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return client.info("server")["process_id"] == pid
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack_on_own_redis(own_redis, tmp_path_factory):
    require("postgres", "rabbitmq")
    with LiveStack(tmp_path_factory.mktemp("own-redis"), REDIS_URL=own_redis.url) as stack:
        stack.start_server()
        stack.start_worker()
        yield stack


def server_rss_mib(stack: LiveStack) -> float:
    with open(f"/proc/{stack.processes['server'].pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_and_never_read(stack: LiveStack, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads another byte."""
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


async def flood(redis_url: str, group: str, count: int, size: int) -> None:
    """`count` events of about `size` bytes for `group`, sent as processing.events sends them."""
    layer = RedisChannelLayer(hosts=[redis_url])
    text = json.dumps({"type": "job.progress", "job": {"job_id": "flood", "padding": "x" * size}})
    message = {"type": "job.event", "job_id": "flood", "status": "processing", "text": text}
    for _ in range(count):
        await layer.group_send(group, message)
    await layer.close_pools()


def group_members(redis_url: str, group: str = "*") -> int:
    """Sockets subscribed to `group` (or to any group), as channels-redis keeps them; not the group
    every server process's channel is in (LISTENERS_GROUP)."""
    client = redis.Redis.from_url(redis_url)
    listeners = f"asgi:group:{LISTENERS_GROUP}".encode()
    try:
        keys = [key for key in client.keys(f"asgi:group:{group}") if key != listeners]
        return sum(client.zcard(key) for key in keys)
    finally:
        client.close()


def inbox_backlog(redis_url: str) -> int:
    """Events waiting in Redis for the server process (channels-redis keeps one inbox per process)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(client.zcard(key) for key in client.keys("asgispecific.*") if client.type(key) == b"zset")
    finally:
        client.close()


def test_a_client_that_never_reads_does_not_grow_the_server(stack_on_own_redis, own_redis):
    stack = stack_on_own_redis
    stuck = open_and_never_read(stack, "/ws/jobs/")  # anonymous: the anonymous owner's group
    # A client that reads: its socket waits on the process's inbox, and so empties it.
    key = {"X-API-Key": api_key(stack)}
    with stuck, connect(ws_url(stack, "/ws/jobs/"), additional_headers=key) as reader:
        # Both sockets in their groups (the stuck one in the flooded group) before the flood.
        stack.wait_until(
            lambda: group_members(own_redis.url) >= 2, timeout=30, what="both sockets to subscribe"
        )
        assert group_members(own_redis.url, ANONYMOUS_GROUP) == 1
        before = server_rss_mib(stack)
        asyncio.run(flood(own_redis.url, ANONYMOUS_GROUP, count=2500, size=25_000))  # 60 MB of events
        stack.wait_until(lambda: inbox_backlog(own_redis.url) == 0, timeout=20, what="the inbox to empty")
        grown = server_rss_mib(stack) - before

        assert grown < 20, f"the server grew by {grown:.0f} MiB for a client that reads nothing"
        assert json.loads(reader.recv(timeout=10))["type"] == "jobs.state"  # and it serves everyone else


def test_a_server_that_could_not_take_its_events_gives_its_sockets_the_current_state(
    stack_on_own_redis, own_redis
):
    stack = stack_on_own_redis
    server = stack.processes["server"]
    with connect(ws_url(stack, "/ws/jobs/")) as live:  # anonymous: the anonymous owner's group
        assert json.loads(live.recv(timeout=10))["type"] == "jobs.state"
        full_before = WS_DROPPED.labels("channel_full")._value.get()
        server.send_signal(signal.SIGSTOP)  # a server that reads nothing: its inbox in Redis fills up
        try:
            asyncio.run(flood(own_redis.url, ANONYMOUS_GROUP, count=2100, size=100))
        finally:
            server.send_signal(signal.SIGCONT)
        assert WS_DROPPED.labels("channel_full")._value.get() > full_before  # more than its capacity

        # What reached the server arrives; then, for what did not, the state in its place.
        received = [json.loads(live.recv(timeout=30))["type"]]
        while received[-1] != "jobs.state":
            received.append(json.loads(live.recv(timeout=30))["type"])
    assert set(received[:-1]) <= {"job.progress"}


def test_with_redis_stopped_jobs_complete_and_sockets_get_the_state_or_a_clean_close(
    stack_on_own_redis, own_redis
):
    stack = stack_on_own_redis
    image = images.jpeg_bytes(images.gradient(320, 240))
    with connect(ws_url(stack, "/ws/jobs/")) as live:
        assert json.loads(live.recv(timeout=10))["type"] == "jobs.state"
        own_redis.stop()
        # An open socket loses its live updates: it is told so, and the client can poll.
        _, code, reason = until_closed(live)
    try:
        assert (code, reason) == (1013, "live updates interrupted; reconnect or poll")

        job = stack.submit("sobel", image)  # submissions still work...
        done = stack.wait_for_status(job["job_id"], timeout=30)  # ...and so do polling and the workers
        assert done["status"] == "completed"

        with connect(ws_url(stack, job["ws_url"])) as ws:  # a new socket gets the state
            received, code, reason = until_closed(ws)
        assert [(m["type"], m["job"]["status"]) for m in received] == [("job.state", "completed")]
        assert code == 1000

        with connect(ws_url(stack, "/ws/jobs/")) as ws:  # or the state, then a clean close
            received, code, reason = until_closed(ws)
        assert received[0]["type"] == "jobs.state"
        assert (code, reason) == (1013, "live updates unavailable; poll the API")
    finally:
        own_redis.start()


def test_a_server_that_stops_leaves_the_groups_every_server_joins(tmp_path):
    """Had it stayed in them, dead, every job's end would be copied to its inbox until its membership
    expired, and counted as lost once that inbox was full."""
    require("postgres", "rabbitmq", "redis")
    with LiveStack(tmp_path) as stack:
        client = redis.Redis.from_url(stack.env["REDIS_URL"])
        groups = [f"asgi:group:{ENDED_GROUP}", f"asgi:group:{LISTENERS_GROUP}"]
        before = {group: set(client.zrange(group, 0, -1)) for group in groups}  # other tests' servers
        stack.start_server()
        job = stack.submit("grayscale", images.jpeg_bytes(images.gradient(64, 48)))  # no worker: it waits
        with stack.client() as http:  # a long poll: the server's channel joins the group of every end
            assert http.get(f"/api/v1/jobs/{job['job_id']}", params={"wait": 1}).status_code == 200
        joined = {group: set(client.zrange(group, 0, -1)) - before[group] for group in groups}
        assert [len(channels) for channels in joined.values()] == [1, 1]  # the server's one channel

        stack.stop("server")

        assert {group: joined[group] & set(client.zrange(group, 0, -1)) for group in groups} == {
            group: set() for group in groups
        }
        assert "live events interrupted" not in stack.log("server")  # a stop, not a failure
        client.close()
