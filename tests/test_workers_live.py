"""Worker processes on the full stack: supervised by `run_workers` (`make worker`), never orphaned
or stalled. Real PostgreSQL, RabbitMQ and Redis (tests/stack.py)."""

import io
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from PIL import Image

from scaler.backends.processes import child_pids, worker_command
from tests.frozen import submit_and_freeze_mid_job
from tests.stack import MANAGE, LiveStack, rabbitmqctl

pytestmark = pytest.mark.services


def distinct(image: Image.Image) -> Image.Image:
    """`image` with a first row no other call gives: a job the stack has never seen (no result reuse)."""
    stamp = uuid.uuid4().bytes * (image.width // 16 + 1)
    row = Image.frombytes("L", (image.width, 1), stamp[: image.width])
    image.paste(row.convert(image.mode), (0, 0))
    return image


def slow_jpeg(side: int = 3000) -> bytes:
    """A job of a second or so (with runs=10): long enough to freeze its worker mid-job."""
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((side, side)).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def small_png() -> bytes:
    buffer = io.BytesIO()
    distinct(Image.radial_gradient("L")).save(buffer, "PNG")
    return buffer.getvalue()


BOOTED = "is booting up."  # what each Dramatiq main process logs once its worker process is ready


def worker_processes(supervisor: int) -> set[int]:
    """The Dramatiq worker processes under `run_workers`: each group's main process forks one."""
    return {worker for group in child_pids(supervisor) for worker in child_pids(group)}


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; whoever adopted it has not reaped it yet


def test_make_worker_replaces_a_killed_worker_process_and_drains_on_sigterm(live_stack):
    supervisor = live_stack.spawn(
        "run-workers", [*MANAGE, "run_workers", "--processes", "2", "--threads", "1"]
    )
    try:
        # Booted, not just forked: a Dramatiq main process whose worker dies before it reports ready
        # notices only at the end of its fork timeout (30 s).
        def booted() -> bool:
            return live_stack.log("run-workers").count(BOOTED) == 2

        live_stack.wait_until(booted, 60, "two booted workers")
        victim = min(worker_processes(supervisor.pid))
        os.kill(victim, signal.SIGKILL)  # as the OOM killer would

        def replaced() -> bool:
            workers = worker_processes(supervisor.pid)
            return len(workers) == 2 and victim not in workers

        live_stack.wait_until(replaced, 60, "the killed worker process to be replaced")
        jobs = [live_stack.submit("grayscale", small_png(), filename="image.png") for _ in range(4)]
        for job in jobs:
            assert live_stack.wait_for_status(job["job_id"], timeout=90)["status"] == "completed"

        # SIGTERM with a job in hand: the supervisor drains, the job finishes where it started.
        job, held = submit_and_freeze_mid_job(live_stack, slow_jpeg(), runs=10)
        supervisor.send_signal(signal.SIGTERM)
        os.kill(held, signal.SIGCONT)
        assert supervisor.wait(timeout=120) == 0
        assert live_stack.job(job["job_id"])["status"] == "completed"
        assert live_stack.result(job["job_id"])["attempts"] == 1
        assert all(gone(pid) for pid in [held, *worker_processes(supervisor.pid)])
    finally:
        live_stack.processes.pop("run-workers", None)
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()


def test_an_orphaned_worker_finishes_its_job_in_hand_and_exits(live_stack):
    group = live_stack.start_worker("orphaned", threads=1)
    job, orphan = submit_and_freeze_mid_job(live_stack, slow_jpeg(), runs=10)
    try:
        os.kill(group.pid, signal.SIGKILL)  # the main process: its worker process lives on, orphaned
        group.wait()
        live_stack.processes.pop("orphaned")
        live_stack.start_worker("replacement", threads=1)
        os.kill(orphan, signal.SIGCONT)

        live_stack.wait_until(lambda: gone(orphan), 120, "the orphaned worker process to exit")
        done = live_stack.wait_for_status(job["job_id"], timeout=120)
        assert done["status"] == "completed", done["error"]
        assert live_stack.result(job["job_id"])["attempts"] == 1  # finished by the orphan, not redone
        assert "is gone: stopping after the jobs in hand" in live_stack.log("orphaned")

        # Nothing holds a consumer it does not serve: the replacement takes every new job.
        later = live_stack.submit("grayscale", small_png(), filename="image.png")
        assert live_stack.wait_for_status(later["job_id"], timeout=90)["status"] == "completed"
    finally:
        if not gone(orphan):
            os.kill(orphan, signal.SIGKILL)
        for name in ("orphaned", "replacement"):
            if name in live_stack.processes:
                live_stack.stop(name)


@pytest.mark.parametrize("redis_url", ["silent_redis", "refusing_redis"])
def test_a_worker_completes_its_jobs_when_redis_is_unreachable(live_stack, request, redis_url):
    # The gateway keeps the real Redis; only the worker's events go nowhere.
    name = f"worker-{redis_url}"
    live_stack.start_worker(
        name, threads=2, REDIS_URL=request.getfixturevalue(redis_url), JOB_TIME_LIMIT_SECONDS="30"
    )
    try:
        jobs = [live_stack.submit("sobel", small_png(), filename="image.png") for _ in range(6)]
        for job in jobs:
            done = live_stack.wait_for_status(job["job_id"], timeout=90)
            assert done["status"] == "completed", done["error"]  # not failed at its time limit
            assert live_stack.result(job["job_id"])["attempts"] == 1  # run by this worker, first time
    finally:
        live_stack.stop(name)
    assert live_stack.processes.get(name) is None


def rabbitmq_rows(*what: str) -> list[list[str]]:
    """`rabbitmqctl list_...` answered as rows of columns."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *what, "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def connections_serving_no_consumer(vhost: str) -> list[str]:
    """The connections in `vhost` on which nothing consumes: nothing reads them between publishes."""
    channels = rabbitmq_rows("list_channels", "connection", "consumer_count")
    consuming = {connection for connection, count in channels if count != "0"}
    in_vhost = [pid for where, pid in rabbitmq_rows("list_connections", "vhost", "pid") if where == vhost]
    return [pid for pid in in_vhost if pid not in consuming]


def test_an_idle_worker_drains_without_an_error(tmp_path):
    """Nothing sends an unused connection's heartbeats, so RabbitMQ drops it after a few minutes; a
    worker that kept one found it dead when it closed it at shutdown, and logged pika's errors."""
    with LiveStack(tmp_path) as stack:  # a vhost of its own: every connection in it is the worker's
        stack.spawn("idle", worker_command(threads=2, pool="images"))
        consumers = lambda: len(rabbitmq_rows("list_consumers", "-p", stack.name))  # noqa: E731
        stack.wait_until(  # its pool's queue and the callbacks' queue, each with its delay queue
            lambda: consumers() == 4, 60, "the worker to consume its queues and their delay queues", 1
        )

        unused = connections_serving_no_consumer(stack.name)
        for connection in unused:  # what RabbitMQ does to a connection whose heartbeats stopped
            rabbitmqctl("close_connection", connection, "missed heartbeats")
        stack.stop("idle")

        errors = [line for line in stack.log("idle").splitlines() if "ERROR" in line or "CRITICAL" in line]
        assert errors == []
        assert unused == []
