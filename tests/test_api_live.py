"""The client API against the full stack: schemathesis, shared rate limits, a stopped broker, request ids."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.live.waiting import MAX_WAIT_SECONDS
from tests import images
from tests.stack import LiveStack, rabbitmqctl

pytestmark = pytest.mark.services

JPEG = images.jpeg_bytes(images.gradient(96, 64))


def post_image(url: str, headers: dict | None = None, timeout: float = 30, **params) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/process/sobel",
        files={"image": ("a.jpg", JPEG)},
        data=params,
        headers=headers or {},
        timeout=timeout,
    )


def test_schemathesis_finds_no_server_error_and_no_response_off_its_schema(live_stack):
    """Every response to generated requests has a documented status and matches its schema."""
    # As in production, keys are required: the checks of requests without (valid) credentials apply.
    limits = {"RATE_LIMIT_SUBMIT": "10000/m", "RATE_LIMIT_READ": "100000/m"}
    live_stack.start_server("keys-required", API_KEYS_REQUIRED="true", **limits)
    key = live_stack.manage("create_api_key", "schemathesis")
    # The form fields of /process/{service} depend on the service: the document can't say which one
    # service accepts, so a request "valid by the document" may rightly get a 422.
    checks = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    run = [
        "run",
        f"{live_stack.url('keys-required')}/api/v1/openapi.json",
        *checks,
        "-H",
        f"X-API-Key: {key}",
    ]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        *run,
        "--max-examples",
        "25",
        # One worker: with two threads, Python 3.11.7's ast (Hypothesis describes its strategies with
        # it) can fail with "AST constructor recursion depth mismatch", a crash of the run itself.
        "--workers",
        "1",
        "--seed",
        "1",
        # A generated long poll (?wait=N) of a job no worker takes is answered after N seconds, as
        # documented: the client must wait that long, and not call the wait a slow response.
        "--request-timeout",
        str(MAX_WAIT_SECONDS + 15),
        "--max-response-time",
        str(MAX_WAIT_SECONDS + 10),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        live_stack.stop("keys-required")
    summary = re.search(r"(\d+) generated, .*", result.stdout)
    print("schemathesis:", summary.group(0) if summary else result.stdout[-500:])
    assert result.returncode == 0, result.stdout[-4000:]


def test_a_burst_over_the_limit_across_two_server_processes_gets_429(tmp_path):
    from tests.services import require

    require("postgres", "rabbitmq", "redis")
    # A day's window: windows are fixed, and a burst slowed down by a busy machine could straddle
    # the end of a minute's, with the last two requests counted afresh.
    with LiveStack(tmp_path, RATE_LIMIT_SUBMIT="4/d") as stack:
        stack.start_server()
        stack.start_server("second")
        key = {"X-API-Key": stack.manage("create_api_key", "burst")}
        urls = [stack.base_url, stack.url("second")]
        answers = [post_image(urls[n % 2], key) for n in range(6)]

    assert [a.status_code for a in answers[:4]] == [202] * 4
    assert [a.status_code for a in answers[4:]] == [429, 429]  # the count is shared through Redis
    assert int(answers[4].headers["Retry-After"]) >= 1
    assert answers[4].headers["X-RateLimit-Remaining"] == "0"


def test_with_the_broker_stopped_submissions_get_503_fast_and_reads_still_work(private_rabbitmq, tmp_path):
    # Fast: not after a timeout. This server's broker timeouts are longer than the client waits, so
    # an answer that came from one of them would never reach the client.
    patient = {"BROKER_CONNECT_TIMEOUT": "600", "BROKER_PUBLISH_TIMEOUT": "600"}
    with LiveStack(tmp_path) as stack:  # on the test's own RabbitMQ, which it stops
        stack.start_server()
        stack.start_server("patient", **patient)
        accepted = post_image(stack.base_url).json()
        rabbitmqctl("stop_app")
        try:
            refused = post_image(stack.url("patient"), timeout=60)
            read = httpx.get(f"{stack.base_url}{accepted['job_url']}", timeout=10)
            listed = httpx.get(f"{stack.base_url}/api/v1/jobs", timeout=10).json()["jobs"]
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        resubmitted = post_image(stack.base_url)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "broker_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert read.status_code == 200
    assert [job["job_id"] for job in listed] == [job["job_id"] for job in listed if job["job_id"] != ""]
    assert len(listed) == len({job["job_id"] for job in listed})  # the refused job left no row behind
    assert all(job["job_id"] != refused.headers.get("X-Request-ID") for job in listed)
    assert resubmitted.status_code == 202  # after the restart, submissions succeed


def test_queue_status_comes_from_rabbitmq(live_stack):
    post_image(live_stack.base_url, quality="61")  # no worker is running in this module: it waits
    status = httpx.get(f"{live_stack.base_url}/api/v1/queue/status", timeout=10).json()
    assert status["broker"] == "rabbitmq" and status["available"] is True
    images_queue = status["queues"][0]
    assert images_queue["name"] == "images" and images_queue["ready"] >= 1
    assert images_queue["consumers"] == 0


def test_one_grep_shows_a_jobs_whole_life(live_stack):
    trace = "trace-one-grep-42"
    job = post_image(live_stack.base_url, {"X-Request-ID": trace}, quality="62").json()
    live_stack.start_worker("grep-worker")
    try:
        live_stack.wait_for_status(job["job_id"], timeout=60)
    finally:
        live_stack.stop("grep-worker")
    server_lines = [line for line in live_stack.log("server").splitlines() if trace in line]
    worker_lines = [line for line in live_stack.log("grep-worker").splitlines() if trace in line]
    assert server_lines and worker_lines
    assert any(job["job_id"] in line and '"levelname"' in line for line in worker_lines)


def test_requests_reuse_pooled_database_connections(live_stack):
    import psycopg

    def sessions_opened() -> int:
        """PostgreSQL's count of every session ever opened on the stack's database."""
        with psycopg.connect(live_stack.admin_dsn, autocommit=True) as conn:
            query = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
            return conn.execute(query, (live_stack.name,)).fetchone()[0]

    job = post_image(live_stack.base_url, quality="63").json()
    with live_stack.client() as client:
        client.get(job["job_url"])
        before = sessions_opened()
        for _ in range(50):
            assert client.get(job["job_url"]).status_code == 200
    assert sessions_opened() - before <= 2  # not one new PostgreSQL session per request


def test_a_forged_x_forwarded_for_from_an_untrusted_client_does_not_change_its_rate_limit_identity(
    live_stack,
):
    """uvicorn, left to its default, trusts forwarded headers from 127.0.0.1: any local client could
    pick a new address for each request, and so a fresh rate-limit counter."""
    import redis

    forged = [f"203.0.113.{n}" for n in range(1, 4)]
    for address in forged:
        answer = httpx.get(f"{live_stack.base_url}/api/v1/jobs", headers={"X-Forwarded-For": address})
        assert answer.status_code == 200 and "X-RateLimit-Remaining" in answer.headers

    counters = redis.Redis.from_url(live_stack.env["REDIS_URL"])
    try:
        counted = {key.decode().split(":")[-2] for key in counters.scan_iter(match="rl:read:*:address:*")}
    finally:
        counters.close()
    assert "127.0.0.1" in counted
    assert not counted & set(forged)
