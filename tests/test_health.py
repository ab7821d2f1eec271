"""GET /health/live and /health/ready."""

import uuid

import pika
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway.ops import health, snapshots
from tests.factories import stored_job
from tests.services import require, url_of

pytestmark = pytest.mark.django_db

TOKEN = "a-metrics-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_live_answers_ok(client):
    response = client.get("/health/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_names_each_dependency_with_its_state_and_latency(client):
    response = client.get("/health/ready", headers=OPERATOR)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "redis", "storage", "pools"}
    assert all(check["status"] == "up" and check["latency_ms"] >= 0 for check in body["checks"].values())


def test_ready_is_503_when_a_required_dependency_is_down(client, settings):
    settings.BROKER_URL = "amqp://guest:guest@127.0.0.1:1/%2F"
    settings.DRAMATIQ_BROKER = {
        **settings.DRAMATIQ_BROKER,
        "OPTIONS": {"url": "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&socket_timeout=1"},
    }
    response = client.get("/health/ready", headers=OPERATOR)
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["checks"]["broker"]["status"] == "down"


def test_redis_down_degrades_but_stays_ready(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/health/ready", headers=OPERATOR)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["redis"]["status"] == "down"


@pytest.fixture
def rabbitmq(settings):
    """Readiness against the machine's RabbitMQ, whatever the test run was configured with."""
    require("rabbitmq")
    settings.BROKER_URL = url_of("rabbitmq")
    settings.DRAMATIQ_BROKER = {**settings.DRAMATIQ_BROKER, "OPTIONS": {"url": settings.BROKER_URL}}
    connection = pika.BlockingConnection(pika.URLParameters(settings.BROKER_URL))
    yield connection.channel()
    connection.close()


@pytest.fixture
def pool(rabbitmq):
    """A pool of this test's own, its queue deleted afterwards."""
    name = f"test-pool-{uuid.uuid4().hex[:8]}"
    yield name
    rabbitmq.queue_delete(name)


def test_a_pool_with_queued_jobs_and_no_worker_degrades_readiness_and_is_named(client, pool):
    stored_job(pool=pool)
    stored_job(pool=pool)

    response = client.get("/health/ready", headers=OPERATOR)

    assert response.status_code == 200  # the gateway still serves: other pools run, reads work
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["pools"]["status"] == "down"
    assert f"no worker consumes {pool} (2 queued)" in body["checks"]["pools"]["error"]
    assert client.get("/health/ready").json() == {"status": "degraded"}  # the pool's name is for operators


def test_a_pool_whose_queue_has_a_worker_keeps_readiness_ok(client, rabbitmq, pool):
    rabbitmq.queue_declare(pool, durable=True)
    rabbitmq.basic_consume(pool, on_message_callback=lambda *_: None)  # a worker, as RabbitMQ sees it
    stored_job(pool=pool)

    body = client.get("/health/ready", headers=OPERATOR).json()

    assert body["status"] == "ok" and body["checks"]["pools"]["status"] == "up"


def test_anyone_learns_whether_it_is_ready_but_not_what_is_down_or_where(client, settings, api_key):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    for headers in ({}, {"Authorization": "Bearer a-wrong-token"}, api_key("not staff")):
        for path in ("/health/ready", "/api/v1/health"):
            response = client.get(path, headers=headers)
            assert response.status_code == 200 and response.json() == {"status": "degraded"}, path

    detailed = client.get("/api/v1/health", headers=api_key("ops", staff=True)).json()
    assert detailed["checks"]["redis"]["status"] == "down"


def recorded(name: str, check, checked: list[str]):
    """`check`, noting its name in `checked` each time it runs."""

    def run() -> None:
        checked.append(name)
        check()

    return run


def test_ready_checks_its_dependencies_once_a_moment_however_often_asked(client, monkeypatch, snapshot_clock):
    checked: list[str] = []  # a database query, a broker and a Redis connection, an S3 request
    for name, (check, required) in list(health.CHECKS.items()):
        monkeypatch.setitem(health.CHECKS, name, (recorded(name, check, checked), required))
    with CaptureQueriesContext(connection) as database:
        answers = [client.get(path) for path in ["/health/ready"] * 20 + ["/api/v1/health"] * 5]
        detailed = client.get("/health/ready", headers=OPERATOR).json()
    assert {answer.status_code for answer in answers} == {200} and detailed["status"] == "ok"
    assert sorted(checked) == sorted(health.CHECKS) == sorted(detailed["checks"])
    assert [query["sql"] for query in database.captured_queries].count("SELECT 1") == 1

    snapshot_clock[0] += snapshots.FRESH_SECONDS  # a moment later, they are checked again
    assert client.get("/health/ready").status_code == 200
    assert len(checked) == 2 * len(health.CHECKS)


def test_metrics_are_for_the_token_and_staff_only(client, api_key):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer a-wrong-token"}).status_code == 401
    assert client.get("/metrics", headers=api_key("not staff")).status_code == 401

    assert b"darkroom_" in client.get("/metrics", headers=OPERATOR).content
    assert client.get("/metrics", headers=api_key("ops", staff=True)).status_code == 200


def test_liveness_stays_public(client):
    assert client.get("/health/live").status_code == 200
