"""Queue status, statistics, stored files, health, rate limits, metrics and the OpenAPI document."""

import re
import shutil
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.ops import snapshots
from processing.jobs import queues
from processing.models import Job
from processing.worker import admission
from tests.services import IN_CI
from tests.uploads import submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_queue_status_counts_what_waits(client, stub_broker):
    for _ in range(3):
        submit(client)
    body = client.get("/api/v1/queue/status").json()
    assert body["broker"] == "embedded" and body["available"] is True
    assert body["queues"][0]["name"] == "images" and body["queues"][0]["ready"] == 3
    assert body["jobs_queued"] == 3 and body["jobs_processing"] == 0


def test_queue_status_names_machines_to_staff_only(client, api_key, stub_broker):
    admission.report_status(admission.summary({}))  # this machine, as its workers report it
    host = admission.summary({})["host"]

    staff_view = client.get("/api/v1/queue/status", headers=api_key("ops", staff=True)).json()
    assert host in [machine["host"] for machine in staff_view["memory"]]
    for headers in ({}, api_key("not staff")):
        memory = client.get("/api/v1/queue/status", headers=headers).json()["memory"]
        labels = [machine["host"] for machine in memory]
        assert len(labels) == len(staff_view["memory"]) and host not in labels
        assert all(re.fullmatch(r"machine-[0-9a-f]{12}", label) for label in labels), labels


def test_queue_status_reads_the_broker_and_redis_once_a_moment_however_often_asked(
    client, api_key, stub_broker, count_calls, snapshot_clock
):
    broker_reads, redis_reads = count_calls(queues, "queue_status"), count_calls(admission, "machines")
    submit(client)
    staff = api_key("ops", staff=True)
    for headers in [{}] * 20 + [staff]:
        assert client.get("/api/v1/queue/status", headers=headers).json()["queues"][0]["ready"] == 1
    assert (len(broker_reads), len(redis_reads)) == (1, 1)

    submit(client)
    snapshot_clock[0] += snapshots.FRESH_SECONDS
    assert client.get("/api/v1/queue/status").json()["queues"][0]["ready"] == 2
    assert (len(broker_reads), len(redis_reads)) == (2, 2)


def test_statistics_count_by_status_and_service_with_durations(client, run_jobs, stub_worker):
    for service in ("blur", "blur", "sobel"):
        submit(client, service)
    run_jobs()
    stub_worker.pause()
    submit(client, "sobel", quality=50)  # still queued (other parameters: no reuse)
    stats = client.get("/api/v1/statistics").json()
    assert stats["total"] == 4
    assert stats["by_status"]["completed"] == 3 and stats["by_status"]["queued"] == 1
    assert stats["by_service"] == {"blur": {"completed": 2}, "sobel": {"completed": 1, "queued": 1}}
    assert stats["completed_per_minute_5m"] == pytest.approx(3 / 5)
    assert stats["processing"]["samples"] == 3 and stats["processing"]["mean_ms"] > 0
    assert stats["queue_wait"]["p95_ms"] >= 0


def test_file_stats_and_cleanup_are_for_staff_only(client, api_key, run_jobs, settings):
    settings.FILE_TTL_SECONDS = 3600
    staff = api_key("ops", staff=True)
    old, fresh = submit(client).json()["job_id"], submit(client).json()["job_id"]
    run_jobs()
    Job.objects.filter(id=old).update(finished_at=timezone.now() - timedelta(hours=2))

    assert client.get("/api/v1/files/stats").status_code == 403
    assert client.post("/api/v1/files/cleanup").status_code == 403
    stats = client.get("/api/v1/files/stats", headers=staff).json()
    assert stats["uploads"]["files"] == 2 and stats["results"]["files"] == 2
    assert stats["expired"]["files"] == 2 and stats["expired"]["bytes"] > 0

    cleaned = client.post("/api/v1/files/cleanup", headers=staff).json()
    assert cleaned["jobs"] == 1 and cleaned["files_removed"] == 2 and cleaned["bytes_freed"] > 0
    assert client.get(f"/api/v1/download/{old}").status_code == 410
    assert client.get(f"/api/v1/download/{fresh}").status_code == 200


def test_api_health_names_each_dependency_to_operators(client, operator):
    body = client.get("/api/v1/health", headers=operator).json()
    assert body["status"] == "ok" and set(body["checks"]) == {
        "database",
        "broker",
        "redis",
        "storage",
        "pools",
    }


@pytest.mark.usefixtures("fresh_rate_limits")
def test_over_the_limit_a_client_gets_429_with_retry_after(client, api_key, settings, stub_broker):
    settings.RATE_LIMIT_SUBMIT = "2/d"
    headers = api_key("burst")
    answers = [submit(client, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[0]["X-RateLimit-Limit"] == "2" and answers[0]["X-RateLimit-Remaining"] == "1"
    limited = answers[2]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 86400
    assert submit(client, headers=api_key("someone-else")).status_code == 202  # limits are per key


@pytest.mark.usefixtures("fresh_rate_limits")
def test_anonymous_clients_are_limited_by_address_and_proxies_only_when_trusted(
    client, settings, stub_broker
):
    settings.RATE_LIMIT_READ = "1/d"
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    assert client.get("/api/v1/jobs", headers=spoofed).status_code == 200
    assert client.get("/api/v1/jobs", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429

    settings.TRUSTED_PROXIES = ["127.0.0.1"]  # the test client's address, as if it were nginx
    assert client.get("/api/v1/jobs", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    assert client.get("/api/v1/jobs", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 429


@pytest.fixture
def operator(settings) -> dict:
    settings.METRICS_TOKEN = "a-metrics-token"
    return {"Authorization": "Bearer a-metrics-token"}


def test_metrics_expose_jobs_http_and_queues(client, run_jobs, operator):
    submit(client, "blur")
    run_jobs()
    text = client.get("/metrics", headers=operator).content.decode()
    assert 'darkroom_jobs_submitted_total{pool="images",service="blur"}' in text
    assert 'darkroom_jobs_finished_total{pool="images",service="blur",status="completed"}' in text
    assert "darkroom_job_processing_seconds_bucket" in text
    assert 'darkroom_queue_ready{queue="images"}' in text
    assert "django_http_responses_total_by_status_view_method_total" in text


def test_promtool_accepts_the_metrics(client, run_jobs, operator):
    if not shutil.which("promtool"):
        missing = "promtool is not installed (Debian's prometheus package)"
        pytest.fail(missing) if IN_CI else pytest.skip(missing)
    submit(client, "sobel")
    run_jobs()
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=client.get("/metrics", headers=operator).content,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_openapi_document_describes_every_endpoint(client):
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/services",
        "/api/v1/presets",
        "/api/v1/process",
        "/api/v1/process/{service}",
        "/api/v1/resize",
        "/api/v1/crop",
        "/api/v1/convert",
        "/api/v1/jobs/batch",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/status/{job_id}",
        "/api/v1/download/{job_id}",
        "/api/v1/result/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/queue/status",
        "/api/v1/statistics",
        "/api/v1/files/stats",
        "/api/v1/files/cleanup",
        "/api/v1/health",
    ):
        assert path in paths, path
    assert set(paths["/api/v1/jobs/{job_id}/cancel"]) == {"post", "delete"}
    assert "422" in paths["/api/v1/process/{service}"]["post"]["responses"]
    assert client.get("/api/docs").status_code == 302
    assert client.get("/api/v1/docs").status_code == 200


def test_cors_answers_only_configured_origins(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    allowed = client.options("/api/v1/process/blur", headers=preflight)
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "x-api-key" in allowed["Access-Control-Allow-Headers"]
    other = client.options("/api/v1/process/blur", headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other
