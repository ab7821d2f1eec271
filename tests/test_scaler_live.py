"""The scaler as a real process on loopback: PostgreSQL, RabbitMQ, Redis, Dramatiq worker groups,
uvicorn gateways and a private nginx, all started and stopped by `manage.py scale_workers`.
Intervals and cooldowns are short so the whole file runs in about two minutes."""

import functools
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest

from tests import images
from tests.services import require
from tests.stack import MANAGE, LiveStack, free_port

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require("postgres", "rabbitmq", "redis")
    limits = {"RATE_LIMIT_SUBMIT": "100000/m", "RATE_LIMIT_READ": "1000000/m"}
    with LiveStack(tmp_path_factory.mktemp("scaler"), TRUSTED_PROXIES="127.0.0.1", **limits) as stack:
        stack.start_server()
        yield stack


class Scaler:
    """`manage.py scale_workers` as a process, watched through its health endpoint.

    A thread polls the health endpoint all along and remembers every worker group it saw, with its
    worker processes and when it was told to drain: a group may be gone before the test asks.
    """

    def __init__(self, stack: LiveStack, name: str, *flags: str):
        self.stack, self.name = stack, name
        health_port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{health_port}/health"
        ports = ["--health-port", str(health_port), "--metrics-port", str(self.metrics_port)]
        stack.spawn(name, [*MANAGE, "scale_workers", *ports, *flags])
        self.groups: dict[int, dict] = {}
        self._stop = threading.Event()
        self.wait_for(lambda health: health["last_check_at"], "the first check")
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def health(self) -> dict:
        return httpx.get(self.url, timeout=5).json()

    def wait_for(self, condition, what: str, timeout: float = 60) -> dict:
        seen = {}

        def met() -> bool:
            try:
                seen.update(self.health())
            except httpx.HTTPError:
                return False
            return bool(condition(seen))

        self.stack.wait_until(met, timeout=timeout, what=f"the scaler: {what}", interval=0.2)
        return seen

    def stop(self) -> None:
        self._stop.set()
        self.stack.stop(self.name)  # SIGTERM: the scaler drains its workers, stops gateways and nginx

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                workers = self.health()["instances"].get("workers", {})
            except httpx.HTTPError:
                continue
            for group in workers.get("groups", []):
                seen = self.groups.setdefault(group["pid"], {"worker_pids": set(), "draining_since": None})
                seen["worker_pids"].update(group["worker_pids"])
                seen["draining_since"] = seen["draining_since"] or group["draining_since"]


def workers(health: dict) -> dict:
    return health["instances"]["workers"]


def gateways(health: dict) -> dict:
    return health["instances"]["gateways"]


def events(health: dict, pool: str) -> dict[str, int]:
    return {e["action"]: e["count"] for e in health["scaling_events"] if e["pool"] == pool}


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def distinct_jpeg(width: int, height: int, tag: str) -> bytes:
    """A gradient that compresses small but decodes big: a slow job from a small upload.

    Each tag gets its own bytes (a JPEG comment), so no job finishes at once by reusing another's result.
    """
    jpeg = gradient_jpeg(width, height)
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


@functools.cache
def gradient_jpeg(width: int, height: int) -> bytes:
    return images.jpeg_bytes(images.gradient(width, height), quality=80)


def submit_burst(stack: LiveStack, count: int) -> list[str]:
    """`count` jobs of a second or more each (30 megapixels, converted ten times), submitted at once:
    far more than one worker takes, and long enough that every worker still has one in hand when the
    scaler, looking every half second, starts draining."""
    uploads = [distinct_jpeg(6000, 5000, f"burst {index}") for index in range(count)]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda jpeg: stack.submit("grayscale", jpeg, runs=10)["job_id"], uploads))


def worker_pid(stack: LiveStack, job_id: str) -> int:
    return int(stack.result(job_id)["worker"].split(":")[1])  # host:pid:thread


# --- workers ----------------------------------------------------------------------------------
def test_a_burst_scales_workers_up_then_down_draining_without_a_job_redone(stack):
    scaler = Scaler(
        stack, "burst",
        *("--interval", "0.5", "--cooldown", "3", "--threads", "1"),
        *("--min-instances", "1", "--max-instances", "3"),
        *("--scale-up-threshold", "2", "--scale-down-threshold", "1.5"),
    )  # fmt: skip
    try:
        scaler.wait_for(lambda h: workers(h)["running"] == 1 and h["queues"][0]["consumers"], "one worker")
        jobs = submit_burst(stack, 16)

        up = scaler.wait_for(lambda h: workers(h)["target"] == 3, "scale up to 3 workers")
        assert any(a["to"] == 3 and "each > 2" in a["reason"] for a in up["recent_actions"])
        finished = [stack.wait_for_status(job_id, timeout=120) for job_id in jobs]
        down = scaler.wait_for(
            lambda h: workers(h)["target"] == 1 and workers(h)["draining"] == 0, "scale down to 1", timeout=40
        )
        metrics = httpx.get(f"http://127.0.0.1:{scaler.metrics_port}/metrics").text
    finally:
        scaler.stop()

    assert {job["status"] for job in finished} == {"completed"}
    assert [stack.result(job_id)["attempts"] for job_id in jobs] == [1] * len(jobs), "a job was redone"
    actions = events(down, "workers")  # 1 -> 3 -> 2 -> 1 (the start-up 0 -> 1 is no scaling action)
    assert actions["up"] >= 1 and actions["down"] >= 2, actions
    assert 'darkroom_scaler_scaling_events_total{action="down",pool="workers"}' in metrics

    # The proof that scale-down drains: a job that was running when its worker was told to stop
    # finished on that same worker, on its first attempt.
    drained = {pid: g for pid, g in scaler.groups.items() if g["draining_since"]}
    assert drained, "no worker group was seen draining"
    finished_while_draining = [
        job
        for job in finished
        for group in drained.values()
        if worker_pid(stack, job["job_id"]) in group["worker_pids"]
        and when(job["started_at"]) < when(group["draining_since"]) < when(job["finished_at"])
    ]
    assert finished_while_draining, "no drained worker had a job in hand: the test proved nothing"


def test_a_worker_killed_with_sigkill_is_replaced_and_its_job_completes(stack):
    scaler = Scaler(
        stack, "crash", "--interval", "1", "--min-instances", "1", "--max-instances", "1", "--threads", "1"
    )
    try:
        scaler.wait_for(lambda h: workers(h)["running"] == 1 and h["queues"][0]["consumers"], "one worker")
        job = stack.submit("grayscale", distinct_jpeg(7000, 7000, "crash"), runs=10)
        stack.wait_for_status(job["job_id"], ("processing",), timeout=60)
        (group,) = workers(scaler.health())["groups"]
        os.kill(worker_pid(stack, job["job_id"]), signal.SIGKILL)

        replaced = scaler.wait_for(lambda h: h["replacements"].get("workers") == 1, "the replacement")
        done = stack.wait_for_status(job["job_id"], timeout=90)
    finally:
        scaler.stop()

    assert done["status"] == "completed", done["error"]
    assert stack.result(job["job_id"])["attempts"] == 2  # the killed attempt, then the replacement's
    assert [g["pid"] for g in workers(replaced)["groups"]] != [group["pid"]]
    assert events(replaced, "workers") == {}, "neither the replacement nor the start-up is a scaling action"


# --- gateways behind nginx ----------------------------------------------------------------------
def gateway_flags(stack: LiveStack, name: str, *flags: str) -> tuple[str, ...]:
    listen = f"127.0.0.1:{free_port()}"
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
        with httpx.Client(base_url=nginx_url(health), timeout=30) as client:
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
        with httpx.Client(base_url=nginx_url(health), timeout=30) as client:
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
