"""The scaler as a real process on loopback: PostgreSQL, RabbitMQ, Redis, Dramatiq worker groups,
uvicorn gateways and a private nginx, all started and stopped by `manage.py scale_workers`.
Intervals and cooldowns are short so the whole file runs in about two minutes."""

import functools
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import psycopg
import pytest

from bench.images import tagged
from bench.ports import unused_ports
from tests import images
from tests.frozen import freeze, holds_a_file_lock, jobs_in_hand, pid_of, submit_and_kill_mid_job
from tests.services import require
from tests.stack import MANAGE, NO_KEEPALIVE, LiveStack

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require("postgres", "rabbitmq", "redis")
    limits = {"RATE_LIMIT_SUBMIT": "100000/m", "RATE_LIMIT_READ": "1000000/m"}
    with LiveStack(tmp_path_factory.mktemp("scaler"), TRUSTED_PROXIES="127.0.0.1", **limits) as stack:
        stack.start_server()
        yield stack


class Scaler:
    """`manage.py scale_workers` as a process, watched through its health endpoint."""

    def __init__(self, stack: LiveStack, name: str, *flags: str, **env: str):
        self.stack, self.name = stack, name
        for _ in range(5):  # a port taken between the check and the bind: the scaler exits, try others
            health_port, self.metrics_port = unused_ports(2)
            self.url = f"http://127.0.0.1:{health_port}/health"
            ports = ["--health-port", str(health_port), "--metrics-port", str(self.metrics_port)]
            process = stack.spawn(name, [*MANAGE, "scale_workers", *ports, *flags], **env)
            if self.wait_for(lambda health: health["last_check_at"], "the first check", process=process):
                return
        raise AssertionError(f"the scaler exited at each start:\n{stack.log(name)[-3000:]}")

    def health(self) -> dict:
        return httpx.get(self.url, timeout=5).json()

    def wait_for(self, condition, what: str, timeout: float = 60, process=None) -> dict:
        """The health once `condition(health)` holds; {} if `process` exits first."""
        seen = {}

        def met() -> bool:
            if process is not None and process.poll() is not None:
                seen.clear()
                return True
            try:
                seen.update(self.health())
            except httpx.HTTPError:
                return False
            return bool(condition(seen))

        self.stack.wait_until(met, timeout=timeout, what=f"the scaler: {what}", interval=0.2)
        return seen

    def stop(self) -> None:
        self.stack.stop(self.name)  # SIGTERM: the scaler drains its workers, stops gateways and nginx


def workers(health: dict) -> dict:
    return health["instances"]["images"]


def gateways(health: dict) -> dict:
    return health["instances"]["gateways"]


def one_worker_consuming(health: dict) -> bool:
    return workers(health)["running"] == 1 and bool(health["queues"][0]["consumers"])


def events(health: dict, pool: str) -> dict[str, int]:
    return {e["action"]: e["count"] for e in health["scaling_events"] if e["pool"] == pool}


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def distinct_jpeg(width: int, height: int, tag: str) -> bytes:
    """A gradient that compresses small but decodes big: a slow job from a small upload.

    Each tag gets its own bytes (a JPEG comment), so no job finishes at once by reusing another's result.
    """
    return tagged(gradient_jpeg(width, height), tag)


@functools.cache
def gradient_jpeg(width: int, height: int) -> bytes:
    return images.jpeg_bytes(images.gradient(width, height), quality=80)


def submit_burst(stack: LiveStack, count: int) -> list[str]:
    """`count` jobs of about half a second each (10 megapixels, converted ten times: as much as one
    grayscale job may convert), submitted at once."""
    uploads = [distinct_jpeg(4000, 2500, f"burst {index}") for index in range(count)]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda jpeg: stack.submit("grayscale", jpeg, runs=10)["job_id"], uploads))


def worker_pid(stack: LiveStack, job_id: str) -> int:
    """The pid of the worker that ran the job, from its row (the API names workers to staff alone)."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        (worker,) = conn.execute("SELECT worker_id FROM processing_job WHERE id = %s", [job_id]).fetchone()
    return pid_of(worker)


class HeldWorkers:
    """Worker processes stopped (SIGSTOP) in the middle of a job, resumed (SIGCONT) at the test's word.

    A stopped worker holds its job for as long as the test needs: the scaler sees it in flight, and
    whatever the scaler decides meanwhile (a drain) happens while that job is in hand, on any machine.
    """

    def __init__(self, stack: LiveStack):
        self.database = stack.env["DATABASE_URL"]
        self.wait_until = stack.wait_until
        self.held: dict[int, str] = {}  # worker pid -> the job it holds

    def hold(self, count: int, timeout: float = 90) -> None:
        """Stop every worker that starts a job, until `count` of them hold one."""

        def enough_held() -> bool:
            for job_id, pid in jobs_in_hand(self.database).items():
                if pid not in self.held:
                    self._try_hold(pid, job_id)
            return len(self.held) >= count

        self.wait_until(enough_held, timeout, f"{count} workers each holding a job", interval=0.02)

    def resume(self, *pids: int) -> None:
        for pid in pids:
            if self.held.pop(pid, None) is not None:
                os.kill(pid, signal.SIGCONT)

    def resume_all(self) -> None:
        self.resume(*self.held)

    def _try_hold(self, pid: int, job_id: str) -> None:
        freeze(pid, self.database)
        # Held only with the job in hand and no lock taken: a worker stopped inside the admission
        # ledger's lock would make every other worker wait for it.
        if jobs_in_hand(self.database).get(job_id) == pid and not holds_a_file_lock(pid):
            self.held[pid] = job_id
        else:  # let it go on and catch it later in its job, or at the next
            os.kill(pid, signal.SIGCONT)


def worker_pids(health: dict) -> set[int]:
    return {pid for group in workers(health)["groups"] for pid in group["worker_pids"]}


# --- workers ----------------------------------------------------------------------------------
def test_a_burst_scales_workers_up_then_down_draining_without_a_job_redone(stack):
    """1 -> 3 -> 2 -> 1 worker groups, and the group told to drain finishes the job in its hands.

    The test holds the state each step needs instead of hoping for it. Nine jobs wait before the
    scaler starts, and each worker is stopped as soon as it is processing one, so the work per
    worker cannot fall: the scaler must scale up (9 on 1 > 2) and then stay at three (9 on 3, at
    the maximum). Resuming the oldest worker lets jobs finish until 5 on 3 < 1.8: the scaler drains
    the newest group while its worker is still stopped with a job in hand.
    """
    jobs = submit_burst(stack, 9)
    held = HeldWorkers(stack)
    scaler = Scaler(
        stack, "burst",
        *("--interval", "0.5", "--cooldown", "3", "--threads", "1"),
        *("--min-instances", "1", "--max-instances", "3"),
        *("--scale-up-threshold", "2", "--scale-down-threshold", "1.8"),
        # A stopped worker renews no lease: a long one keeps its job from being handed to another.
        JOB_LEASE_SECONDS="120",
    )  # fmt: skip
    try:
        held.hold(3)
        up = scaler.wait_for(lambda h: workers(h)["target"] == 3, "3 workers")
        assert any(a["to"] == 3 and "each > 2" in a["reason"] for a in up["recent_actions"])
        oldest, *_, newest = workers(up)["groups"]
        assert worker_pids(up) == held.held.keys(), "every worker holds a job"

        held.resume(*oldest["worker_pids"])
        draining = scaler.wait_for(lambda h: workers(h)["draining"] == 1, "a group draining")
        (drained,) = [g for g in workers(draining)["groups"] if g["draining_since"]]
        assert drained["pid"] == newest["pid"], "the newest group drains first"
        (drained_worker,) = drained["worker_pids"]
        job_in_hand = held.held[drained_worker]
        held.resume_all()

        finished = [stack.wait_for_status(job_id, timeout=120) for job_id in jobs]
        down = scaler.wait_for(
            lambda h: workers(h)["target"] == 1 and workers(h)["draining"] == 0, "scale down to 1", timeout=60
        )
        metrics = httpx.get(f"http://127.0.0.1:{scaler.metrics_port}/metrics").text
    finally:
        held.resume_all()
        scaler.stop()

    assert {job["status"] for job in finished} == {"completed"}
    assert [stack.result(job_id)["attempts"] for job_id in jobs] == [1] * len(jobs), "a job was redone"
    actions = events(down, "images")  # 1 -> 3 -> 2 -> 1 (the start-up 0 -> 1 is no scaling action)
    assert actions["up"] >= 1 and actions["down"] >= 2, actions
    assert 'darkroom_scaler_scaling_events_total{action="down",pool="images"}' in metrics

    # The drain: the job in the drained worker's hands when it was told to stop finished there, once.
    in_hand = stack.job(job_in_hand)
    assert worker_pid(stack, job_in_hand) == drained_worker
    assert when(in_hand["started_at"]) < when(drained["draining_since"]) < when(in_hand["finished_at"])


def test_a_worker_killed_with_sigkill_is_replaced_and_its_job_completes(stack):
    scaler = Scaler(
        stack, "crash", "--interval", "1", "--min-instances", "1", "--max-instances", "1", "--threads", "1"
    )
    try:
        scaler.wait_for(one_worker_consuming, "one worker")
        (group,) = workers(scaler.health())["groups"]
        job = submit_and_kill_mid_job(stack, gradient_jpeg(3000, 3000), runs=10)

        replaced = scaler.wait_for(lambda h: h["replacements"].get("images") == 1, "the replacement")
        done = stack.wait_for_status(job["job_id"], timeout=90)
    finally:
        scaler.stop()

    assert done["status"] == "completed", done["error"]
    assert stack.result(job["job_id"])["attempts"] == 2  # the killed attempt, then the replacement's
    assert [g["pid"] for g in workers(replaced)["groups"]] != [group["pid"]]
    assert events(replaced, "images") == {}, "neither the replacement nor the start-up is a scaling action"


# --- gateways behind nginx ----------------------------------------------------------------------
def gateway_flags(stack: LiveStack, name: str, *flags: str) -> tuple[str, ...]:
    listen = f"127.0.0.1:{unused_ports(1)[0]}"  # below the ephemeral range: no port-0 bind takes it
    prefix = stack.workdir / f"nginx-{name}"
    nginx = ("--nginx-listen", listen, "--nginx-prefix", str(prefix), "--gateway-port-start", "0")
    return ("--no-workers", "--gateways", *nginx, *flags)


def nginx_url(health: dict) -> str:
    return gateways(health)["nginx"]["url"]


def upstreams_used(stack: LiveStack, name: str) -> list[int]:
    """The gateway port of every request in the scaler's nginx access log, in order."""
    log = (stack.workdir / f"nginx-{name}" / "access.log").read_text()
    return [int(port) for port in re.findall(r"upstream=127\.0\.0\.1:(\d+)", log)]


def drain_queue(stack: LiveStack, job_ids: list[str]) -> None:
    """Run a worker until `job_ids` are done, so no later test sees them as queue depth."""
    stack.start_worker("cleanup")
    try:
        for job_id in job_ids:
            assert stack.wait_for_status(job_id, timeout=60)["status"] == "completed"
    finally:
        stack.stop("cleanup")


def test_requests_through_nginx_keep_succeeding_when_a_gateway_is_killed(stack):
    scaler = Scaler(
        stack, "failover", *gateway_flags(stack, "failover", "--gateway-min", "2", "--gateway-max", "2")
    )
    try:
        health = scaler.wait_for(lambda h: gateways(h)["in_service"] == 2, "two gateways in service")
        victim = gateways(health)["processes"][0]
        answers, job_ids = [], []
        with httpx.Client(base_url=nginx_url(health), timeout=30, limits=NO_KEEPALIVE) as client:
            for i in range(40):
                if i == 10:
                    os.kill(victim["pid"], signal.SIGKILL)
                if i % 4 == 0:
                    response = client.post(
                        "/api/v1/process/sobel",
                        files={"image": ("i.jpg", distinct_jpeg(64, 48, f"failover {i}"))},
                    )
                    job_ids.append(response.json().get("job_id"))
                else:
                    response = client.get("/api/v1/services")
                answers.append(response.status_code)
        replaced = scaler.wait_for(
            lambda h: h["replacements"].get("gateways") == 1 and gateways(h)["in_service"] == 2,
            "a new gateway",
        )
    finally:
        scaler.stop()

    assert set(answers) <= {200, 202} and answers.count(202) == 10, answers
    new_port = ({g["port"] for g in gateways(replaced)["processes"]} - {victim["port"]}).pop()
    assert new_port != victim["port"]
    drain_queue(stack, job_ids)


def test_a_rising_load_score_adds_a_gateway_that_nginx_sends_traffic_to(stack):
    flags = gateway_flags(
        stack, "rising",
        *("--gateway-min", "1", "--gateway-max", "2", "--gateway-sustain", "0", "--gateway-cooldown", "600"),
        "--interval", "0.5",
    )  # fmt: skip
    scaler = Scaler(stack, "rising", *flags)
    try:
        health = scaler.wait_for(lambda h: gateways(h)["in_service"] == 1, "one gateway in service")
        first_port = gateways(health)["processes"][0]["port"]
        with httpx.Client(base_url=nginx_url(health), timeout=30, limits=NO_KEEPALIVE) as client:
            # No worker runs: nine jobs waiting make the load score 9 x 10 + ms / 100 > 80.
            job_ids = [
                client.post(
                    "/api/v1/process/sobel", files={"image": ("i.jpg", distinct_jpeg(64, 48, f"rising {i}"))}
                ).json()["job_id"]
                for i in range(9)
            ]
            scaled = scaler.wait_for(lambda h: gateways(h)["in_service"] == 2, "a second gateway in service")
            assert all(client.get("/api/v1/services").status_code == 200 for _ in range(20))
    finally:
        scaler.stop()

    decision = scaled["last_decisions"]["gateways"]
    assert decision["to"] == 2 and "load score" in decision["reason"] and scaled["load"]["score"] > 80
    second_port = ({g["port"] for g in gateways(scaled)["processes"]} - {first_port}).pop()
    assert second_port in upstreams_used(stack, "rising")[-20:], "nginx sent the new gateway nothing"
    drain_queue(stack, job_ids)
