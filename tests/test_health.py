"""GET /health/live and /health/ready."""

import pytest

pytestmark = pytest.mark.django_db


def test_live_answers_ok(client):
    response = client.get("/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_names_each_dependency_with_its_state_and_latency(client):
    response = client.get("/health/ready")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "redis", "storage"}
    assert all(check["status"] == "up" and check["latency_ms"] >= 0 for check in body["checks"].values())


def test_ready_is_503_when_a_required_dependency_is_down(client, settings):
    settings.BROKER_URL = "amqp://guest:guest@127.0.0.1:1/%2F"
    settings.DRAMATIQ_BROKER = {
        **settings.DRAMATIQ_BROKER,
        "OPTIONS": {"url": "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&socket_timeout=1"},
    }
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["checks"]["broker"]["status"] == "down"


def test_redis_down_degrades_but_stays_ready(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["redis"]["status"] == "down"
