"""What the scaler knows about itself, for its health endpoint and its Prometheus metrics.

The control loop writes; the two HTTP threads read a snapshot. Both endpoints are built from the
same snapshot, so they never disagree.
"""

import threading
import time
from collections import Counter, deque

from scaler.backends.processes import utc_now
from scaler.policy import HOLD, Decision

RECENT_ACTIONS = 20


class Status:
    def __init__(self, backend: str, check_interval: float, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.check_interval = check_interval
        self.backend = backend
        self.started_at = utc_now()
        self.last_check: float | None = None
        self.last_check_at: str | None = None
        self.last_error: str | None = None
        self.instances: dict[str, dict] = {}
        self.readings: dict = {}
        self.load: dict = {}
        self.last_decisions: dict[str, dict] = {}
        self.recent_actions: deque[dict] = deque(maxlen=RECENT_ACTIONS)
        self.scaling_events: Counter[tuple[str, str]] = Counter()
        self.replacements: Counter[str] = Counter()

    # --- written by the control loop -------------------------------------------------------
    def record_readings(self, readings) -> None:
        with self._lock:
            self.readings = {
                "broker_available": readings.broker_available,
                "queues": [dict(queue) for queue in readings.queues],
                "jobs_in_flight": readings.in_flight,
            }

    def record_load(self, score: float, response_ms: float) -> None:
        with self._lock:
            self.load = {"score": round(score, 2), "response_ms": round(response_ms, 2)}

    def record_decision(self, pool: str, current: int, decision: Decision, direction: str) -> None:
        """Every decision is the pool's last; changes go to recent actions, load-driven ones are counted."""
        record = {"at": utc_now(), "pool": pool, "from": current, "to": decision.target, "action": direction}
        record.update(reason=decision.reason, load_driven=decision.load_driven)
        with self._lock:
            self.last_decisions[pool] = record
            if direction != HOLD:
                self.recent_actions.appendleft(record)
                if decision.load_driven:
                    self.scaling_events[(pool, direction)] += 1

    def record_replacements(self, pool: str, count: int) -> None:
        with self._lock:
            self.replacements[pool] += count

    def record_instances(self, pool: str, description: dict) -> None:
        with self._lock:
            self.instances[pool] = description

    def record_check(self, error: str | None = None) -> None:
        with self._lock:
            self.last_check, self.last_check_at = self._clock(), utc_now()
            self.last_error = error

    # --- read by the endpoints -----------------------------------------------------------
    def healthy(self) -> bool:
        """A check ran, recently, and without error."""
        with self._lock:
            if self.last_check is None or self.last_error:
                return False
            return self._clock() - self.last_check <= 3 * self.check_interval + 5

    def snapshot(self) -> dict:
        healthy = self.healthy()
        with self._lock:
            return {
                "status": "ok" if healthy else "failing",
                "backend": self.backend,
                "started_at": self.started_at,
                "check_interval": self.check_interval,
                "last_check_at": self.last_check_at,
                "last_error": self.last_error,
                "instances": {pool: dict(description) for pool, description in self.instances.items()},
                **self.readings,
                "load": dict(self.load),
                "last_decisions": dict(self.last_decisions),
                "recent_actions": list(self.recent_actions),
                "scaling_events": [
                    {"pool": pool, "action": direction, "count": count}
                    for (pool, direction), count in sorted(self.scaling_events.items())
                ],
                "replacements": dict(self.replacements),
            }
