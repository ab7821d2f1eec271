"""The kubernetes backend against a stand-in API server on loopback (there is no cluster here)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from project import config
from scaler.autoscaler import Autoscaler
from scaler.backends.kubernetes import KubernetesApi, KubernetesDeployment, KubernetesError
from scaler.policy import WorkerPolicy
from scaler.readings import Readings
from scaler.status import Status

TOKEN = "service-account-token"
SCALE_PATH = "/apis/apps/v1/namespaces/darkroom/deployments/darkroom-worker/scale"


class FakeApiServer(BaseHTTPRequestHandler):
    """The scale subresource of one Deployment, as the API server serves it; it keeps every call."""

    def do_GET(self):
        self.record()
        if self.refuse():
            return
        self.reply(200, {"kind": "Scale", "spec": {"replicas": self.server.replicas}})

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.record(body)
        if self.refuse():
            return
        self.server.replicas = body["spec"]["replicas"]
        self.reply(200, {"kind": "Scale", "spec": {"replicas": self.server.replicas}})

    def record(self, body=None):
        self.server.calls.append((self.command, self.path, self.headers.get("Content-Type"), body))

    def refuse(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.reply(401, {"kind": "Status", "message": "Unauthorized"})
            return True
        if self.path != SCALE_PATH:
            self.reply(404, {"kind": "Status", "message": "deployments.apps not found"})
            return True
        return False

    def reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def api_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    server.replicas, server.calls = 2, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(api_server, tmp_path) -> KubernetesApi:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return KubernetesApi(f"http://127.0.0.1:{api_server.server_address[1]}", token)


def test_it_reads_and_patches_the_deployment_replicas(api, api_server):
    workers = KubernetesDeployment(api, "darkroom", "darkroom-worker")
    assert workers.target() == 2
    workers.scale_to(4)
    assert api_server.replicas == 4
    method, path, content_type, body = api_server.calls[-1]
    assert (method, path) == ("PATCH", SCALE_PATH)
    assert content_type == "application/merge-patch+json" and body == {"spec": {"replicas": 4}}
    assert workers.describe() == {"target": 4, "namespace": "darkroom", "deployment": "darkroom-worker"}


def test_it_reads_the_token_again_for_each_call(api, api_server, tmp_path):
    (tmp_path / "token").write_text("rotated")  # projected tokens are rotated while the pod runs
    with pytest.raises(KubernetesError, match="401"):
        KubernetesDeployment(api, "darkroom", "darkroom-worker").target()


def test_an_unknown_deployment_is_a_named_error(api):
    with pytest.raises(KubernetesError, match="404"):
        KubernetesDeployment(api, "darkroom", "no-such-deployment").target()


def test_the_autoscaler_scales_the_deployment_with_the_cluster_as_the_truth(api, api_server):
    workers = KubernetesDeployment(api, "darkroom", "darkroom-worker")
    queue = {"name": "images", "ready": 100, "delayed": 0, "consumers": 2}
    busy = Readings(broker_available=True, queues=(queue,), in_flight=4)
    scaler = Autoscaler(
        Status("kubernetes", 30),
        workers=workers,
        worker_policy=WorkerPolicy.from_settings(config.defaults()),
        read=lambda: busy,
    )
    scaler.check()
    assert api_server.replicas == 5

    api_server.replicas = 3  # someone scaled it by hand meanwhile
    scaler.last_action_at["images"] = None
    scaler.check()
    decision = scaler.status.snapshot()["last_decisions"]["images"]
    assert decision["from"] == 3 and api_server.replicas == 5
