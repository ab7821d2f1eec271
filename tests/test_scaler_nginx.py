"""The nginx configuration (deploy/nginx/darkroom.conf) in a real, private nginx, in front of small
stand-in gateways that answer with their name and the headers they received, and in front of a
real gateway as the scaler starts it."""

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bench.stack import announced_port
from gateway.http.body_limits import body_limits
from scaler.backends.gateways import gateway_command, gateway_environment
from scaler.backends.nginx import Nginx, NginxError
from tests import images
from tests.services import IN_CI, require
from tests.stack import NO_KEEPALIVE, LiveStack, refused_port, start_on_a_free_port


def require_nginx() -> None:
    if shutil.which("nginx"):
        return
    missing = "nginx is not installed (Debian's nginx package)"
    pytest.fail(missing) if IN_CI else pytest.skip(missing)


class StandIn(BaseHTTPRequestHandler):
    """Answers JSON naming the server and echoing the request; /slow waits until the test releases
    it (`server.in_slow` is set meanwhile); /ws/ upgrades."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/ws/"):
            self.upgrade()
            return
        if self.path == "/slow":
            self.server.in_slow.set()
            self.server.release.wait(60)
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer()

    def answer(self):
        body = json.dumps({"server": self.server.name, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def upgrade(self):
        if (
            self.headers.get("Upgrade", "").lower() != "websocket"
            or "upgrade" not in self.headers.get("Connection", "").lower()
        ):
            self.send_error(400, "no upgrade")
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.write(f"hello from {self.server.name}".encode())
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


def stand_in(name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.name = name
    server.in_slow, server.release = threading.Event(), threading.Event()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def address(server: ThreadingHTTPServer) -> str:
    return f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def gateways():
    servers = {name: stand_in(name) for name in ("a", "b")}
    yield servers
    for server in servers.values():
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def nginx(tmp_path):
    require_nginx()
    started = []

    def start(
        upstreams: list[str], max_body_bytes: int = 1024 * 1024, media_root=tmp_path / "media"
    ) -> Nginx:
        def on(port: int) -> Nginx | None:
            server = Nginx(
                tmp_path / f"nginx-{port}", f"127.0.0.1:{port}", max_body_bytes, media_root=media_root
            )
            try:
                server.start(upstreams)
            except NginxError:  # the port was taken meanwhile: another one
                return None
            started.append(server)
            return server

        server, _ = start_on_a_free_port(on)
        return server

    yield start
    for server in started:
        server.stop()


def served_by(nginx: Nginx, count: int, path: str = "/api/v1/services") -> list[str]:
    with httpx.Client(base_url=nginx.url, timeout=10, limits=NO_KEEPALIVE) as client:
        return [client.get(path).json()["server"] for _ in range(count)]


def test_nginx_spreads_requests_over_the_gateways(nginx, gateways):
    proxy = nginx([address(g) for g in gateways.values()])
    assert set(served_by(proxy, 10)) == {"a", "b"}


def test_the_gateway_sees_the_client_address_and_host_as_forwarded(nginx, gateways):
    proxy = nginx([address(gateways["a"])])
    headers = httpx.get(proxy.url + "/", headers={"Host": "darkroom.example"}).json()["headers"]
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["Host"] == "darkroom.example"
    assert headers["X-Forwarded-Proto"] == "http"


def test_a_dead_gateway_is_skipped_without_a_failed_request(nginx, gateways):
    with refused_port() as port:
        proxy = nginx([f"127.0.0.1:{port}", address(gateways["a"])])  # nothing listens on the first
        assert served_by(proxy, 10) == ["a"] * 10


def test_a_busy_gateway_gets_no_new_request_while_another_is_free(nginx, gateways):
    proxy = nginx([address(g) for g in gateways.values()])
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: httpx.get(proxy.url + "/slow", timeout=60).json()["server"])
        LiveStack.wait_until(lambda: any(g.in_slow.is_set() for g in gateways.values()), 30, "/slow")
        quick = served_by(proxy, 6)  # while the slow request is in flight at one gateway
        for gateway in gateways.values():
            gateway.release.set()
        busy = slow.result()
    assert busy not in quick, "least_conn sends new requests to the gateway without one in flight"


def test_a_websocket_upgrade_reaches_the_gateway(nginx, gateways):
    proxy = nginx([address(gateways["a"])])
    host, port = proxy.host_port
    handshake = (
        "GET /ws/jobs/ HTTP/1.1\r\nHost: darkroom\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(handshake.encode())
        received = b""
        while b"hello from a" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {received!r}"
            received += chunk
    assert received.startswith(b"HTTP/1.1 101")


def test_an_upload_over_the_limit_gets_413_in_json_from_nginx_itself(nginx, gateways):
    proxy = nginx([address(gateways["a"])], max_body_bytes=1000)
    response = httpx.post(proxy.url + "/api/v1/process/sobel", content=b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "upload_too_large",
        "message": "the request body is larger than the limit of 1000 bytes",
    }
    assert httpx.post(proxy.url + "/api/v1/process/sobel", content=b"x" * 500).json()["server"] == "a"


def test_a_batch_at_the_gateways_limit_passes_nginx_and_one_byte_more_does_not(nginx, gateways, settings):
    settings.MAX_UPLOAD_BYTES, settings.MAX_REQUEST_BYTES, settings.MAX_BATCH_FILES = 1000, 2000, 3
    largest = body_limits(settings).batch  # what the gateway takes on /api/v1/jobs/batch
    proxy = nginx([address(gateways["a"])], max_body_bytes=largest)
    batch = proxy.url + "/api/v1/jobs/batch"
    assert httpx.post(batch, content=b"x" * largest).json()["server"] == "a"
    assert httpx.post(batch, content=b"x" * (largest + 1)).status_code == 413


def test_no_gateway_answering_gives_503_json_with_retry_after(nginx):
    with refused_port() as port:
        proxy = nginx([f"127.0.0.1:{port}"])
        response = httpx.get(proxy.url + "/api/v1/services")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "gateway_unavailable"


def test_a_reload_with_a_new_upstream_list_moves_the_traffic(nginx, gateways):
    proxy = nginx([address(gateways["a"])])
    assert set(served_by(proxy, 4)) == {"a"}
    proxy.set_upstreams([address(gateways["b"])])
    deadline = time.monotonic() + 30
    while set(served_by(proxy, 4)) != {"b"}:  # the old worker process may answer once more
        assert time.monotonic() < deadline, "nginx kept sending requests to the removed gateway"
        time.sleep(0.1)


# --- A real gateway, as the scaler starts it -------------------------------------------------
METRICS_TOKEN = "a-metrics-token"


@pytest.fixture
def scaler_gateway(tmp_path, settings):
    """A gateway with the scaler's command line and environment, on a stack of its own; the scaler's
    own TRUSTED_PROXIES empty, as the deployments had it."""
    require("postgres", "rabbitmq", "redis")
    settings.TRUSTED_PROXIES = []
    workdir = tmp_path / "stack"
    workdir.mkdir()
    with LiveStack(workdir, RATE_LIMIT_READ="2/d", METRICS_TOKEN=METRICS_TOKEN) as stack:
        process = stack.spawn("gateway", gateway_command("127.0.0.1", 0), **gateway_environment("127.0.0.1"))
        url = f"http://127.0.0.1:{announced_port(workdir / 'gateway.log', process)}"
        stack.wait_until(lambda: stack.is_live(url), timeout=60, what="the gateway to answer /health/live")
        yield url


def untrusted_forwarded(gateway_url: str) -> float:
    metrics = httpx.get(f"{gateway_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return float(re.search(r"^darkroom_untrusted_forwarded_total (\S+)$", metrics, re.MULTILINE).group(1))


def test_clients_behind_the_scalers_nginx_keep_rate_limits_of_their_own(nginx, scaler_gateway):
    """Counted as nginx's address, every client behind it would share one limit: one client's
    requests would starve everyone's."""
    proxy = nginx([scaler_gateway.removeprefix("http://")])
    answers = {
        client: [
            httpx.get(f"{proxy.url}/api/v1/jobs", headers={"X-Forwarded-For": client}).status_code
            for _ in range(3)
        ]
        for client in ("198.51.100.1", "198.51.100.2")
    }
    assert answers == {"198.51.100.1": [200, 200, 429], "198.51.100.2": [200, 200, 429]}
    assert untrusted_forwarded(scaler_gateway) == 0  # nginx's header is trusted, not ignored


# --- Downloads sent by nginx itself (X-Accel-Redirect) ----------------------------------------
@pytest.fixture
def download_stack(tmp_path):
    """A stack with a worker, keys required; its results are files under `workdir/media`."""
    require("postgres", "rabbitmq", "redis")
    workdir = tmp_path / "stack"
    workdir.mkdir()
    with LiveStack(workdir, API_KEYS_REQUIRED="true") as stack:
        stack.start_worker()
        yield stack


def gateway_as_the_scaler_starts_it(stack: LiveStack, name: str = "gateway") -> str:
    """The gateway's address (HOST:PORT), with the scaler's command line and environment."""
    process = stack.spawn(name, gateway_command("127.0.0.1", 0), **gateway_environment("127.0.0.1"))
    url = f"http://127.0.0.1:{announced_port(stack.workdir / f'{name}.log', process)}"
    stack.wait_until(lambda: stack.is_live(url), timeout=60, what="the gateway to answer /health/live")
    return url.removeprefix("http://")


def finished_job(base_url: str, key: str, image: bytes) -> dict:
    """A grayscale job submitted with `key`, once it has ended (long polls: no sleep)."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30, limits=NO_KEEPALIVE) as client:
        submitted = client.post("/api/v1/process/grayscale", files={"image": ("photo.jpg", image)})
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        deadline = time.monotonic() + 60
        while job["status"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job {job['job_id']} did not end"
            job = client.get(f"/api/v1/jobs/{job['job_id']}", params={"wait": 5}).json()
    assert job["status"] == "completed", job
    return job


def test_nginx_sends_a_local_result_the_gateway_only_names(nginx, download_stack):
    stack = download_stack
    gateway = gateway_as_the_scaler_starts_it(stack)
    proxy = nginx([gateway], media_root=stack.workdir / "media")
    alice, bob = stack.manage("create_api_key", "alice"), stack.manage("create_api_key", "bob")
    job_id = finished_job(proxy.url, alice, images.jpeg_bytes(images.photo(96, 64)))["job_id"]
    (result,) = stack.result_files(job_id)
    path = f"/api/v1/download/{job_id}"

    sent = httpx.get(proxy.url + path, headers={"X-API-Key": alice})
    assert sent.status_code == 200
    assert sent.content == result.read_bytes()
    assert sent.headers["Content-Type"] == "image/jpeg"
    assert sent.headers["Content-Disposition"] == f'attachment; filename="{job_id}.jpg"'

    # What nginx got from the gateway: the file's name, none of its bytes.
    named = httpx.get(f"http://{gateway}{path}", headers={"X-API-Key": alice})
    assert named.content == b""
    assert named.headers["X-Accel-Redirect"] == f"/_darkroom/media/results/{job_id}/{result.name}"

    assert httpx.get(proxy.url + path, headers={"X-API-Key": bob}).status_code == 404
    # The internal location answers nginx's redirects alone: a client naming it gets nothing.
    internal = named.headers["X-Accel-Redirect"]
    assert httpx.get(proxy.url + internal, headers={"X-API-Key": alice}).status_code == 404


def test_without_the_prefix_the_gateway_behind_nginx_sends_the_file_itself(nginx, download_stack):
    stack = download_stack
    stack.start_server("plain")  # DOWNLOAD_ACCEL_PREFIX unset
    proxy = nginx([stack.url("plain").removeprefix("http://")], media_root=stack.workdir / "media")
    alice = stack.manage("create_api_key", "alice")
    job_id = finished_job(proxy.url, alice, images.jpeg_bytes(images.photo(96, 64, seed=1)))["job_id"]
    (result,) = stack.result_files(job_id)

    direct = httpx.get(f"{stack.url('plain')}/api/v1/download/{job_id}", headers={"X-API-Key": alice})
    assert "X-Accel-Redirect" not in direct.headers and direct.content == result.read_bytes()
    sent = httpx.get(f"{proxy.url}/api/v1/download/{job_id}", headers={"X-API-Key": alice})
    assert sent.content == result.read_bytes() and sent.headers["Content-Type"] == "image/jpeg"


# --- Live events through nginx to gateways of their own ---------------------------------------
@pytest.fixture
def gateways_naming_themselves(tmp_path):
    """Two gateways as the scaler starts them, each naming itself in its WebSocket handshakes."""
    require("postgres", "rabbitmq", "redis")
    with LiveStack(tmp_path, GATEWAY_PROCESS_HEADER="true") as stack:
        yield stack, [gateway_as_the_scaler_starts_it(stack, name) for name in ("gateway-a", "gateway-b")]


def test_an_event_reaches_sockets_on_both_gateways_behind_the_scalers_nginx(
    nginx, gateways_naming_themselves
):
    from websockets.sync.client import connect

    stack, addresses = gateways_naming_themselves
    proxy = nginx(addresses)
    url = proxy.url.replace("http://", "ws://") + "/ws/jobs/"
    by_gateway = {}
    with contextlib.ExitStack() as sockets:
        for _ in range(50):  # least_conn sends the next one to the gateway holding fewer: two suffice
            ws = sockets.enter_context(connect(url))
            assert json.loads(ws.recv(timeout=30))["type"] == "jobs.state"  # subscribed
            by_gateway.setdefault(ws.response.headers["X-Gateway-Process"], ws)
            if len(by_gateway) == 2:
                break
        assert len(by_gateway) == 2, "every socket went to one gateway"
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            image = images.jpeg_bytes(images.gradient(64, 48))
            job = client.post("/api/v1/process/grayscale", files={"image": ("a.jpg", image)}).json()

        for ws in by_gateway.values():
            event = json.loads(ws.recv(timeout=30))
            while event.get("job", {}).get("job_id") != job["job_id"]:
                event = json.loads(ws.recv(timeout=30))
            assert (event["type"], event["job"]["status"]) == ("job.queued", "queued")
