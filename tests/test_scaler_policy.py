"""The scaling policies as tables: what the scaler sees, and how many processes it keeps."""

from dataclasses import replace

import pytest

from project import config
from scaler.policy import (
    GatewayPolicy,
    GatewayState,
    WorkerPolicy,
    WorkerState,
    decide_gateways,
    decide_workers,
    load_score,
)

NOW = 10_000.0
DEFAULTS = WorkerPolicy.from_settings(
    config.defaults()
)  # the defaults: 1..5 workers, up above 10, down below 2, 120 s cooldown
GATEWAYS = GatewayPolicy.from_settings(
    config.defaults()
)  # 1..3, up above 80, down below 30, 180 s cooldown, 30 s sustain


def ago(seconds: float) -> float:
    return NOW - seconds


# instances, waiting, in flight, last action, expected target
WORKER_TABLE = {
    "an idle system stays at the minimum": (1, 0, 0, None, 1),
    "a burst goes straight to what it needs": (1, 25, 0, None, 3),
    "a big burst stops at MAX_INSTANCES": (1, 500, 0, None, 5),
    "just over the threshold adds one": (1, 11, 0, None, 2),
    "exactly at the threshold holds": (1, 10, 0, None, 1),
    "jobs in flight count as work": (1, 8, 4, None, 2),
    "busy workers with an empty queue are not idle": (2, 0, 4, None, 2),
    "a trickle removes one worker at a time": (3, 1, 2, None, 2),
    "the last spare worker goes when work dries up": (2, 0, 1, None, 1),
    "at MAX_INSTANCES a bigger burst holds": (5, 1000, 10, None, 5),
    "an unreadable broker holds": (3, None, 0, None, 3),
    "starting up: below MIN_INSTANCES, up at once": (0, 0, 0, None, 1),
    "above MAX_INSTANCES (settings lowered): down at once": (7, 100, 0, ago(1), 5),
    "no scale-down while cooling down after a scale-up": (5, 0, 0, ago(60), 5),
    "no second scale-up while cooling down": (3, 100, 0, ago(30), 3),
    "the cooldown over, the scale-down happens": (5, 0, 0, ago(121), 4),
    "a burst right after a scale-down waits out the cooldown": (2, 100, 0, ago(10), 2),
    "the cooldown after a scale-down over, the burst is served": (2, 100, 0, ago(120), 5),
    "one scale-down per cooldown": (4, 0, 0, ago(10), 4),
    "bounds apply even while cooling down": (0, 0, 0, ago(1), 1),
}


@pytest.mark.parametrize(
    "instances, waiting, in_flight, last, expected", WORKER_TABLE.values(), ids=WORKER_TABLE.keys()
)
def test_worker_decisions(instances, waiting, in_flight, last, expected):
    state = WorkerState(instances, waiting, in_flight, last)
    decision = decide_workers(state, DEFAULTS, NOW)
    assert decision.target == expected, decision.reason
    assert decision.reason


def test_a_bounds_correction_is_not_a_reaction_to_load():
    assert not decide_workers(WorkerState(0, 100, 0), DEFAULTS, NOW).load_driven
    assert not decide_gateways(GatewayState(5, 0, NOW), GATEWAYS, NOW).load_driven
    assert decide_workers(WorkerState(1, 100, 0), DEFAULTS, NOW).load_driven


def test_a_decision_says_why_in_numbers():
    decision = decide_workers(WorkerState(1, 25, 3, None), DEFAULTS, NOW)
    assert "25 waiting + 3 in flight on 1" in decision.reason and "1 -> 3" in decision.reason


def test_a_cooling_decision_says_how_long_is_left():
    decision = decide_workers(WorkerState(5, 0, 0, ago(100)), DEFAULTS, NOW)
    assert "cooling down for 20s more" in decision.reason


def test_with_min_instances_zero_workers_scale_to_zero_and_back():
    policy = replace(DEFAULTS, min_instances=0)
    assert decide_workers(WorkerState(1, 0, 0), policy, NOW).target == 0
    assert decide_workers(WorkerState(0, 0, 0), policy, NOW).target == 0
    assert decide_workers(WorkerState(0, 3, 0), policy, NOW).target == 1


def simulate(
    loads: list[tuple[int, int]], policy: WorkerPolicy, interval: float = 30
) -> list[tuple[float, int]]:
    """Run the policy over (waiting, in flight) readings, one per check; the actions: (when, new count)."""
    instances, last_action_at, actions = policy.min_instances, None, []
    for step, (waiting, in_flight) in enumerate(loads):
        now = step * interval
        decision = decide_workers(WorkerState(instances, waiting, in_flight, last_action_at), policy, now)
        if decision.target != instances:
            actions.append((now, decision.target))
            last_action_at, instances = now, decision.target
    return actions


def test_a_load_hovering_between_the_thresholds_never_flaps():
    wobbling = [(waiting, 2) for waiting in [2, 15, 3, 14, 4, 16, 2, 13] * 5]  # 2 workers: 2..9 each
    policy = replace(DEFAULTS, min_instances=2)
    assert simulate(wobbling, policy) == []


def test_a_load_swinging_across_both_thresholds_changes_at_most_once_per_cooldown():
    swinging = [(0, 0), (60, 0)] * 20  # every 30 s: idle, then a burst, for 20 minutes
    actions = simulate(swinging, DEFAULTS)
    assert actions, "the bursts should scale up"
    gaps = [later - earlier for (earlier, _), (later, _) in zip(actions, actions[1:], strict=False)]
    assert all(gap >= DEFAULTS.cooldown for gap in gaps)


def test_a_burst_then_silence_scales_up_once_and_down_one_step_per_cooldown():
    loads = [(500, 0)] + [(0, 0)] * 30  # 15 minutes of nothing after one burst
    assert simulate(loads, DEFAULTS) == [(0, 5), (120, 4), (240, 3), (360, 2), (480, 1)]


# --- gateways -------------------------------------------------------------------------------
LOAD_SCORES = {
    "idle": ([0], 0.0, 0.0),
    "8 waiting and a 50 ms health check: just above 80": ([8], 50.0, 80.5),
    "the depth is averaged over the queues": ([3, 5], 200.0, 42.0),
    "a slow health check counts": ([0], 2000.0, 20.0),
    "capped at 100": ([20], 10.0, 100.0),
    "no queue known: response time only": ([], 500.0, 5.0),
}


@pytest.mark.parametrize("depths, response_ms, expected", LOAD_SCORES.values(), ids=LOAD_SCORES.keys())
def test_load_score(depths, response_ms, expected):
    assert load_score(depths, response_ms) == pytest.approx(expected)


# instances, score, seconds on this side of the thresholds, last action, expected target
GATEWAY_TABLE = {
    "a high score, sustained, adds a gateway": (1, 90, 30, None, 2),
    "a high score not yet sustained holds": (1, 90, 10, None, 1),
    "a middling score holds": (2, 50, 600, None, 2),
    "a low score, sustained, removes one": (3, 10, 60, None, 2),
    "never below GATEWAY_MIN_INSTANCES": (1, 0, 600, None, 1),
    "never above GATEWAY_MAX_INSTANCES": (3, 100, 600, None, 3),
    "cooling down after a scale-up holds": (2, 100, 60, ago(100), 2),
    "after the cooldown another is added": (2, 100, 60, ago(181), 3),
    "a spike right after a scale-down waits out the cooldown": (1, 95, 30, ago(20), 1),
    "exactly 80 is not above 80": (1, 80, 600, None, 1),
    "starting up: one gateway at least": (0, 0, 0, None, 1),
}


@pytest.mark.parametrize(
    "instances, score, on_side_for, last, expected", GATEWAY_TABLE.values(), ids=GATEWAY_TABLE.keys()
)
def test_gateway_decisions(instances, score, on_side_for, last, expected):
    state = GatewayState(instances, score, side_since=NOW - on_side_for, last_action_at=last)
    decision = decide_gateways(state, GATEWAYS, NOW)
    assert decision.target == expected, decision.reason
    assert decision.reason
