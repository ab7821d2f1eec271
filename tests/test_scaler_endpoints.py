"""The scaler's health endpoint (JSON) and its Prometheus metrics, served on loopback ports."""

import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scaler.endpoints import serve_health, serve_metrics
from scaler.policy import DOWN, HOLD, UP, Decision
from scaler.readings import Readings
from scaler.status import Status
from tests.services import IN_CI


@pytest.fixture
def status():
    status = Status("local", check_interval=30)
    queue = {"name": "images", "ready": 42, "delayed": 3, "consumers": 2}
    status.record_readings(Readings(broker_available=True, queues=(queue,), in_flight=4))
    status.record_instances("workers", {"target": 3, "running": 3, "draining": 1, "groups": []})
    status.record_instances("gateways", {"target": 2, "running": 2, "in_service": 2})
    status.record_load(84.5, 45.0)
    status.record_decision("workers", 0, Decision(1, "0 is outside 1..5: 1", load_driven=False), UP)
    status.record_decision(
        "workers", 1, Decision(3, "42 waiting + 4 in flight on 1: 46.0 each > 10: 1 -> 3"), UP
    )
    status.record_decision("workers", 3, Decision(3, "within 2..10"), HOLD)
    status.record_decision("gateways", 2, Decision(1, "load score 12.0 < 30 for 31s: 2 -> 1"), DOWN)
    status.record_replacements("workers", 1)
    status.record_check()
    return status


@pytest.fixture
def serving(status):
    servers = []

    def serve(kind):
        server = (serve_health if kind == "health" else serve_metrics)(status, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()


def test_the_health_endpoint_shows_instances_and_decisions_with_their_reasons(serving):
    response = httpx.get(serving("health") + "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["instances"]["workers"]["target"] == 3 and body["instances"]["gateways"]["target"] == 2
    assert body["last_decisions"]["workers"]["reason"] == "within 2..10"
    assert [action["action"] for action in body["recent_actions"]] == ["down", "up", "up"]
    assert "1 -> 3" in body["recent_actions"][1]["reason"]
    assert not body["recent_actions"][2]["load_driven"], "the start-up is not a scaling action"
    assert body["queues"][0]["ready"] == 42 and body["jobs_in_flight"] == 4
    assert body["replacements"] == {"workers": 1}


def test_the_health_endpoint_answers_503_when_the_checks_fail(serving, status):
    status.record_check(error="OperationalError: connection refused")
    response = httpx.get(serving("health") + "/health")
    assert response.status_code == 503 and response.json()["status"] == "failing"


def test_the_metrics_show_instances_queues_load_score_and_scaling_events(serving):
    text = httpx.get(serving("metrics") + "/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("darkroom_scaler_instances", (("pool", "workers"), ("state", "target")))] == 3
    assert samples[("darkroom_scaler_instances", (("pool", "workers"), ("state", "draining")))] == 1
    assert samples[("darkroom_scaler_instances", (("pool", "gateways"), ("state", "running")))] == 2
    assert samples[("darkroom_scaler_queue_messages", (("queue", "images"), ("state", "ready")))] == 42
    assert samples[("darkroom_scaler_jobs_in_flight", ())] == 4
    assert samples[("darkroom_scaler_gateway_load_score", ())] == 84.5
    assert samples[("darkroom_scaler_scaling_events_total", (("action", "up"), ("pool", "workers")))] == 1
    assert samples[("darkroom_scaler_scaling_events_total", (("action", "down"), ("pool", "gateways")))] == 1
    assert samples[("darkroom_scaler_replacements_total", (("pool", "workers"),))] == 1
    assert samples[("darkroom_scaler_healthy", ())] == 1


TOKEN = "kq3VQn0m8hHk2yZ4xJw1uP9tRb6sLc7E"


def test_with_a_metrics_token_the_metrics_want_it(serving, settings):
    settings.METRICS_TOKEN = TOKEN
    url = serving("metrics") + "/metrics"

    for headers in ({}, {"Authorization": "Bearer replace-me"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401 and "darkroom_scaler" not in refused.text
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and "darkroom_scaler_instances" in allowed.text


def test_with_a_metrics_token_anyone_else_learns_only_whether_the_scaler_is_healthy(
    serving, settings, status
):
    settings.METRICS_TOKEN = TOKEN
    url = serving("health") + "/health"

    assert httpx.get(url).json() == {"status": "ok"}  # enough for a probe
    assert (
        httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).json()["queues"][0]["name"] == "images"
    )
    status.record_check(error="OperationalError: connection refused")
    failing = httpx.get(url)
    assert failing.status_code == 503 and failing.json() == {"status": "failing"}


def test_promtool_accepts_the_scaler_metrics(serving):
    if not shutil.which("promtool"):
        missing = "promtool is not installed (Debian's prometheus package)"
        pytest.fail(missing) if IN_CI else pytest.skip(missing)
    text = httpx.get(serving("metrics") + "/metrics").content
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
