"""The control loop's two steps: `supervise()` keeps the pools whole (every second),
`check()` reads the load and applies the policies (every SCALE_CHECK_INTERVAL).

Replacing a crashed process is supervision, not scaling: it keeps the count the policy chose,
and neither counts as a scaling event nor restarts the cooldown.
"""

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError

from scaler.backends import Pool
from scaler.backends.gateways import LocalGateways
from scaler.backends.kubernetes import KubernetesError
from scaler.backends.nginx import NginxError
from scaler.policy import (
    HOLD,
    Decision,
    GatewayPolicy,
    GatewayState,
    WorkerPolicy,
    WorkerState,
    decide_gateways,
    decide_workers,
    direction_of,
    load_score,
    score_side,
)
from scaler.readings import Readings, read
from scaler.status import Status

logger = logging.getLogger(__name__)

# What a check can run into and survive: the next check tries again.
CHECK_ERRORS = (DatabaseError, KubernetesError, NginxError, OSError)


class Autoscaler:
    def __init__(
        self,
        status: Status,
        workers: Pool | None = None,
        worker_policy: WorkerPolicy | None = None,
        gateways: LocalGateways | None = None,
        gateway_policy: GatewayPolicy | None = None,
        read: Callable[[], Readings] = read,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.status = status
        self.workers = workers
        self.worker_policy = worker_policy or WorkerPolicy.from_settings(settings)
        self.gateways = gateways
        self.gateway_policy = gateway_policy or GatewayPolicy.from_settings(settings)
        self.read, self.clock = read, clock
        self.last_action_at: dict[str, float | None] = {}  # by pool name: none yet
        # The gateways' load score: which side of the thresholds it is on, and since when.
        self.score_side: tuple[str, float] = (HOLD, clock())

    @property
    def pools(self) -> list[Pool]:
        return [pool for pool in (self.workers, self.gateways) if pool is not None]

    def supervise(self) -> None:
        for pool in self.pools:
            try:
                replaced = pool.supervise()
            except (NginxError, OSError) as exc:
                logger.error("supervising the %s failed, will retry: %s", pool.name, exc)
                continue
            if replaced:
                self.status.record_replacements(pool.name, replaced)
            self.status.record_instances(pool.name, pool.describe())

    def check(self) -> None:
        now = self.clock()
        try:
            readings = self.read()
            self.status.record_readings(readings)
            if self.workers:
                self.scale_workers(self.workers, readings, now)
            if self.gateways:
                self.scale_gateways(self.gateways, readings, now)
        except CHECK_ERRORS as exc:
            logger.warning("scaling check failed: %s", exc)
            self.status.record_check(error=f"{exc.__class__.__name__}: {exc}")
            return
        self.status.record_check()

    def scale_workers(self, workers: Pool, readings: Readings, now: float) -> Decision:
        current = workers.target()
        state = WorkerState(
            current, readings.waiting, readings.in_flight, self.last_action_at.get(workers.name)
        )
        decision = decide_workers(state, self.worker_policy, now)
        self.apply(workers, current, decision, now)
        return decision

    def scale_gateways(self, gateways: LocalGateways, readings: Readings, now: float) -> Decision:
        response_ms = gateways.response_ms()
        score = load_score(readings.depths, response_ms)
        self.status.record_load(score, response_ms)
        side = score_side(score, self.gateway_policy)
        if side != self.score_side[0]:
            self.score_side = (side, now)
        current = gateways.target()
        state = GatewayState(current, score, self.score_side[1], self.last_action_at.get(gateways.name))
        decision = decide_gateways(state, self.gateway_policy, now)
        self.apply(gateways, current, decision, now)
        return decision

    def apply(self, pool: Pool, current: int, decision: Decision, now: float) -> None:
        direction = direction_of(current, decision.target)
        if direction != HOLD:
            logger.info("scaling %s %s: %s", pool.name, direction, decision.reason)
            pool.scale_to(decision.target)
            if decision.load_driven:
                self.last_action_at[pool.name] = now
        self.status.record_decision(pool.name, current, decision, direction)
        self.status.record_instances(pool.name, pool.describe())

    def shutdown(self) -> None:
        for pool in self.pools:
            pool.shutdown()
