"""The control loop with the pools and the readings faked: what it applies, counts and reports."""

import signal
import time

import pytest
from django.db import OperationalError

from project import config
from scaler.autoscaler import Autoscaler
from scaler.backends.local import LocalWorkers
from scaler.policy import GatewayPolicy, WorkerPolicy
from scaler.readings import Readings
from scaler.status import Status


class FakePool:
    def __init__(self, name: str = "workers", count: int = 1, response_ms: float = 0.0):
        self.name, self.count, self.response = name, count, response_ms
        self.crashes = 0

    def target(self) -> int:
        return self.count

    def scale_to(self, target: int) -> None:
        self.count = target

    def crash(self) -> None:
        self.crashes += 1

    def supervise(self) -> int:
        replaced, self.crashes = self.crashes, 0
        return replaced

    def describe(self) -> dict:
        return {"target": self.count, "running": self.count}

    def response_ms(self) -> float:
        return self.response

    def shutdown(self) -> None:
        self.count = 0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def readings(waiting: int | None, in_flight: int = 0) -> Readings:
    queue = {"name": "images", "ready": waiting, "delayed": 0, "consumers": 1}
    return Readings(broker_available=waiting is not None, queues=(queue,), in_flight=in_flight)


@pytest.fixture
def clock():
    return Clock()


def autoscaler(clock, load: list, **pools) -> Autoscaler:
    status = Status("fake", check_interval=30, clock=clock)
    return Autoscaler(
        status,
        worker_policy=WorkerPolicy.from_settings(config.defaults()),
        gateway_policy=GatewayPolicy.from_settings(config.defaults()),
        read=lambda: load[0],
        clock=clock,
        **pools,
    )


def test_a_check_applies_the_policy_and_reports_why(clock):
    workers = FakePool()
    scaler = autoscaler(clock, [readings(50, in_flight=2)], workers=workers)
    scaler.check()

    assert workers.count == 5
    snapshot = scaler.status.snapshot()
    decision = snapshot["last_decisions"]["workers"]
    assert (decision["from"], decision["to"], decision["action"]) == (1, 5, "up")
    assert "50 waiting + 2 in flight on 1" in decision["reason"]
    assert snapshot["scaling_events"] == [{"pool": "workers", "action": "up", "count": 1}]
    assert snapshot["status"] == "ok" and snapshot["jobs_in_flight"] == 2


def test_replacing_a_crashed_worker_is_not_a_scaling_action_and_keeps_the_cooldown(clock):
    workers = FakePool()
    load = [readings(50)]
    scaler = autoscaler(clock, load, workers=workers)
    scaler.check()  # up to 5 at t=1000

    clock.now += 100
    workers.crash()
    scaler.supervise()
    load[0] = readings(0)
    scaler.check()  # 100 s after the scale-up: still cooling down, crash or not

    snapshot = scaler.status.snapshot()
    assert snapshot["replacements"] == {"workers": 1}
    assert snapshot["scaling_events"] == [{"pool": "workers", "action": "up", "count": 1}]
    assert (
        workers.count == 5 and "cooling down for 20s more" in snapshot["last_decisions"]["workers"]["reason"]
    )

    clock.now += 20
    scaler.check()
    assert workers.count == 4


def test_the_start_up_to_min_instances_starts_no_cooldown(clock):
    workers = FakePool(count=0)
    load = [readings(0)]
    scaler = autoscaler(clock, load, workers=workers)
    scaler.check()
    assert workers.count == 1

    clock.now += 2  # a burst right after start-up is served at once
    load[0] = readings(50)
    scaler.check()
    assert workers.count == 5
    assert scaler.status.snapshot()["scaling_events"] == [{"pool": "workers", "action": "up", "count": 1}]


def test_an_unreadable_broker_holds_the_workers(clock):
    workers = FakePool(count=3)
    scaler = autoscaler(clock, [readings(None)], workers=workers)
    scaler.check()
    assert workers.count == 3
    assert "broker unreachable" in scaler.status.snapshot()["last_decisions"]["workers"]["reason"]


def test_a_failed_check_makes_the_scaler_unhealthy_until_one_succeeds(clock):
    def database_down():
        raise OperationalError("connection refused")

    scaler = autoscaler(clock, [readings(0)], workers=FakePool())
    scaler.read = database_down
    scaler.check()
    snapshot = scaler.status.snapshot()
    assert snapshot["status"] == "failing" and "connection refused" in snapshot["last_error"]

    scaler.read = lambda: readings(0)
    scaler.check()
    assert scaler.status.healthy()


def test_the_scaler_is_unhealthy_when_its_checks_stop(clock):
    scaler = autoscaler(clock, [readings(0)], workers=FakePool())
    scaler.check()
    clock.now += 3 * 30 + 6
    assert not scaler.status.healthy()


def test_gateways_follow_the_load_score_once_it_is_sustained(clock):
    gateways = FakePool(name="gateways", response_ms=40)
    scaler = autoscaler(clock, [readings(9)], gateways=gateways)  # 9 x 10 + 40 / 100 = 90.4
    scaler.check()
    assert gateways.count == 1
    assert scaler.status.snapshot()["load"] == {"score": 90.4, "response_ms": 40}

    clock.now += 30
    scaler.check()
    assert gateways.count == 2

    scaler.read = lambda: readings(0)  # the score drops: below 30, but the clock of that side restarts
    clock.now += 200
    scaler.check()
    assert gateways.count == 2
    clock.now += 30
    scaler.check()
    assert gateways.count == 1


# --- local worker groups, with a stand-in command so the test is quick -------------------
SLEEPER = ["sleep", "60"]


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_local_workers_drain_with_one_sigterm_and_replace_a_crashed_group():
    workers = LocalWorkers(threads=1, command=SLEEPER)
    try:
        workers.scale_to(2)
        first, second = workers.active
        assert workers.describe()["running"] == 2

        workers.scale_to(1)  # the newest one drains
        assert workers.active == [first] and workers.draining == [second]
        wait_for(lambda: second.process.poll() is not None)
        assert second.process.returncode == -signal.SIGTERM
        assert workers.supervise() == 0 and workers.draining == []

        first.process.kill()
        first.process.wait()
        assert workers.supervise() == 1
        (replacement,) = workers.active
        assert replacement is not first and replacement.process.poll() is None
    finally:
        workers.shutdown()
    assert workers.active == [] and workers.draining == []
