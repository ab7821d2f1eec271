"""`make run`, the first command a new user runs: the embedded default, no services, and the same
constant-memory promise as the production servers."""

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from scaler.backends.processes import ROOT, child_pids
from tests import images
from tests.stack import LiveStack, announced_port, bmp_upload_body, peak_rss_kib

SERVICE_VARIABLES = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME")


def descendants(pid: int) -> list[int]:
    children = child_pids(pid)
    return children + [d for child in children for d in descendants(child)]


def serving_process(make: subprocess.Popen) -> int:
    """The reloader's server process: the one that imported the application and answers requests."""
    for pid in descendants(make.pid):
        if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text():
            return pid
    raise AssertionError("no server process under `make run`")


@pytest.fixture
def make_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(HOST="127.0.0.1", PORT="0", DARKROOM_VAR_DIR=str(tmp_path))  # 0: the kernel picks one
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115 (the child process keeps it)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{announced_port(tmp_path / 'make-run.log', process, timeout=180)}"
        LiveStack.wait_until(lambda: answers(f"{url}/health/live"), 180, "`make run` to serve")
        yield process, url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_make_run_processes_a_job_and_refuses_a_200_mb_upload_without_holding_it(make_run, tmp_path):
    process, url = make_run
    with httpx.Client(base_url=url, timeout=30) as client:
        small = images.jpeg_bytes(images.gradient(64, 64))
        job = client.post("/api/v1/process/grayscale", files={"image": ("small.jpg", small)}).json()
        done = client.get(f"/api/v1/jobs/{job['job_id']}", params={"wait": 30}).json()
        assert done["status"] == "completed", done  # the embedded workers, in the server process

        server = serving_process(process)
        before = peak_rss_kib(server)
        boundary = "darkroom-make-run"
        length, body = bmp_upload_body(boundary, megabytes=200)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
        response = client.post("/api/v1/process/grayscale", content=body(), headers=headers, timeout=120)
        grown_mib = (peak_rss_kib(server) - before) / 1024

    assert response.status_code == 413, response.text
    assert grown_mib <= 20, f"`make run` grew by {grown_mib:.1f} MiB for a body it refused"
    # The application answers the server's start-up events: no "lifespan unsupported" line at the start.
    assert "Application startup complete" in (tmp_path / "make-run.log").read_text()
