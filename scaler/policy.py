"""When to add or remove a worker or a gateway process: pure functions of what the scaler sees,
its settings and the time. No I/O here, so every rule is a row in a table of tests.

Workers scale up when the work per worker process exceeds SCALE_UP_THRESHOLD, down when it falls
below SCALE_DOWN_THRESHOLD, with a cooldown between actions. "Work" is the messages waiting in
RabbitMQ plus the jobs being processed: a worker busy with a long job is not idle just because the
queue is empty.

Gateways follow a load score, `average queue depth x 10 + health-check ms / 100`,
scaling up above 80 and down below 30, once the score has stayed there for a sustain period.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UP = "up"
DOWN = "down"
HOLD = "hold"
MAX_LOAD_SCORE = 100.0


@dataclass(frozen=True)
class Decision:
    target: int
    reason: str
    # False for a correction to the bounds (start-up, changed settings): not a reaction to load,
    # so it starts no cooldown and is not counted as a scaling action.
    load_driven: bool = True


@dataclass(frozen=True)
class WorkerPolicy:
    """Defaults and bounds live with the settings (project/config.py): no second copy here."""

    min_instances: int
    max_instances: int
    scale_up_threshold: float
    scale_down_threshold: float
    cooldown: float

    @classmethod
    def from_settings(cls, s: Any) -> "WorkerPolicy":
        """From Django's settings, or any object with the same names (the scaler's flags applied)."""
        return cls(
            min_instances=s.MIN_INSTANCES,
            max_instances=s.MAX_INSTANCES,
            scale_up_threshold=s.SCALE_UP_THRESHOLD,
            scale_down_threshold=s.SCALE_DOWN_THRESHOLD,
            cooldown=s.SERVICES_COOLDOWN_PERIOD,
        )


@dataclass(frozen=True)
class WorkerState:
    instances: int  # the worker processes the scaler keeps now (its current target)
    waiting: int | None  # messages ready in RabbitMQ; None when the broker could not be read
    in_flight: int  # jobs being processed
    last_action_at: float | None = None  # monotonic seconds of the last scaling action


@dataclass(frozen=True)
class GatewayPolicy:
    min_instances: int
    max_instances: int
    load_threshold_up: float
    load_threshold_down: float
    cooldown: float
    sustain: float

    @classmethod
    def from_settings(cls, s: Any) -> "GatewayPolicy":
        return cls(
            min_instances=s.GATEWAY_MIN_INSTANCES,
            max_instances=s.GATEWAY_MAX_INSTANCES,
            load_threshold_up=s.GATEWAY_LOAD_THRESHOLD_UP,
            load_threshold_down=s.GATEWAY_LOAD_THRESHOLD_DOWN,
            cooldown=s.GATEWAY_COOLDOWN_PERIOD,
            sustain=s.GATEWAY_SUSTAIN_PERIOD,
        )


@dataclass(frozen=True)
class GatewayState:
    instances: int
    score: float
    # Since when the score has been on its current side of the thresholds (see `score_side`).
    side_since: float
    last_action_at: float | None = None  # monotonic seconds of the last scaling action


def direction_of(current: int, target: int) -> str:
    return UP if target > current else DOWN if target < current else HOLD


def cooldown_left(last_action_at: float | None, cooldown: float, now: float) -> float:
    """Seconds before the next scaling action is allowed: every action, either way, starts the cooldown.

    With SERVICES_COOLDOWN_PERIOD (120 s by default) between scaling actions, a scale-up is never
    undone by the dip it caused itself, and a load wobbling around a threshold moves the count
    at most once per cooldown.
    """
    if last_action_at is None:
        return 0.0
    return max(0.0, last_action_at + cooldown - now)


def bounded(instances: int, low: int, high: int) -> int:
    return max(low, min(high, instances))


def out_of_bounds(instances: int, low: int, high: int) -> Decision | None:
    """Bounds are configuration, not load: they apply at once, whatever the cooldown."""
    target = bounded(instances, low, high)
    if target == instances:
        return None
    return Decision(target, f"{instances} is outside {low}..{high}: {target}", load_driven=False)


def act_unless_cooling(
    current: int, target: int, last_action_at: float | None, cooldown: float, now: float, why: str
) -> Decision:
    left = cooldown_left(last_action_at, cooldown, now)
    if left > 0:
        return Decision(current, f"{why}, but cooling down for {left:.0f}s more")
    return Decision(target, f"{why}: {current} -> {target}")


# --- workers ------------------------------------------------------------------------
def decide_workers(state: WorkerState, policy: WorkerPolicy, now: float) -> Decision:
    """How many worker processes to keep."""
    current = state.instances
    forced = out_of_bounds(current, policy.min_instances, policy.max_instances)
    if forced:
        return forced
    if state.waiting is None:
        return Decision(current, "queue depth unknown (broker unreachable): holding")

    work = state.waiting + state.in_flight
    per_instance = work / current if current else (math.inf if work else 0.0)
    seen = f"{state.waiting} waiting + {state.in_flight} in flight on {current}: {per_instance:.1f} each"

    if per_instance > policy.scale_up_threshold:
        if current >= policy.max_instances:
            return Decision(current, f"{seen} > {policy.scale_up_threshold:g}, at MAX_INSTANCES")
        # Straight to the size the backlog needs, not one at a time: a burst is served at once.
        needed = math.ceil(work / policy.scale_up_threshold)
        target = bounded(max(current + 1, needed), policy.min_instances, policy.max_instances)
        why = f"{seen} > {policy.scale_up_threshold:g}"
        return act_unless_cooling(current, target, state.last_action_at, policy.cooldown, now, why)

    if per_instance < policy.scale_down_threshold:
        if current <= policy.min_instances:
            return Decision(current, f"{seen} < {policy.scale_down_threshold:g}, at MIN_INSTANCES")
        # One at a time: each stopped worker drains, and the load it leaves is seen before the next.
        why = f"{seen} < {policy.scale_down_threshold:g}"
        return act_unless_cooling(current, current - 1, state.last_action_at, policy.cooldown, now, why)

    return Decision(current, f"{seen}: within {policy.scale_down_threshold:g}..{policy.scale_up_threshold:g}")


# --- gateways -----------------------------------------------------------------------
def load_score(queue_depths: Sequence[int], response_ms: float) -> float:
    """The gateways' load score: average queue depth x 10 + health-check ms / 100, at most 100."""
    average_depth = sum(queue_depths) / len(queue_depths) if queue_depths else 0.0
    return min(MAX_LOAD_SCORE, average_depth * 10 + response_ms / 100)


def score_side(score: float, policy: GatewayPolicy) -> str:
    """UP above the upper threshold, DOWN below the lower one, HOLD in between."""
    if score > policy.load_threshold_up:
        return UP
    if score < policy.load_threshold_down:
        return DOWN
    return HOLD


def decide_gateways(state: GatewayState, policy: GatewayPolicy, now: float) -> Decision:
    """How many gateway processes to keep behind nginx."""
    current = state.instances
    forced = out_of_bounds(current, policy.min_instances, policy.max_instances)
    if forced:
        return forced

    side = score_side(state.score, policy)
    seen = f"load score {state.score:.1f}"
    if side == HOLD:
        return Decision(
            current, f"{seen}: within {policy.load_threshold_down:g}..{policy.load_threshold_up:g}"
        )
    if side == UP and current >= policy.max_instances:
        return Decision(current, f"{seen} > {policy.load_threshold_up:g}, at GATEWAY_MAX_INSTANCES")
    if side == DOWN and current <= policy.min_instances:
        return Decision(current, f"{seen} < {policy.load_threshold_down:g}, at GATEWAY_MIN_INSTANCES")

    threshold = policy.load_threshold_up if side == UP else policy.load_threshold_down
    why = f"{seen} {'>' if side == UP else '<'} {threshold:g} for {now - state.side_since:.0f}s"
    if now - state.side_since < policy.sustain:
        return Decision(current, f"{why}, not yet {policy.sustain:g}s")
    target = current + 1 if side == UP else current - 1
    return act_unless_cooling(current, target, state.last_action_at, policy.cooldown, now, why)
