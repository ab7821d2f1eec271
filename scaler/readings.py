"""What the scaler reads each check: queue depths from RabbitMQ, jobs in flight from the database,
and how long the gateways take to answer their health check."""

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from processing.jobs.queues import queue_status
from processing.jobs.stats import in_flight_counts

PROBE_TIMEOUT = 2.0  # seconds; a gateway that takes longer counts as this slow
# Probes go straight to the gateway: an HTTP(S)_PROXY in the environment is for the outside world.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Readings:
    broker_available: bool
    queues: tuple[dict, ...]  # {"name", "ready", "delayed", "consumers"} per queue
    in_flight: int  # jobs in the processing state: delivered to a worker and not finished

    @property
    def waiting(self) -> int | None:
        """Messages ready for a worker, over all queues; None when the broker could not be read."""
        if not self.broker_available:
            return None
        return sum(queue["ready"] or 0 for queue in self.queues)

    @property
    def depths(self) -> list[int]:
        return [queue["ready"] or 0 for queue in self.queues]

    @property
    def consumers(self) -> int:
        return max((queue["consumers"] or 0 for queue in self.queues), default=0)


def read(pool: str | None = None) -> Readings:
    """The broker's queues and the jobs in flight: all pools', or one pool's (processing.jobs.pools)."""
    # In-flight comes from the job table (RabbitMQ's unacknowledged counts need the management plugin);
    # a processing job is exactly a delivered message whose work is not done.
    in_flight = in_flight_counts(pool)["jobs_processing"]
    status = queue_status(pool)
    queues = tuple(
        {key: queue[key] for key in ("name", "ready", "delayed", "consumers")} for queue in status["queues"]
    )
    return Readings(broker_available=status["available"], queues=queues, in_flight=in_flight)


def probe_ms(url: str, timeout: float = PROBE_TIMEOUT) -> float:
    """Milliseconds a GET of `url` takes; a failure or a timeout counts as the whole timeout."""
    started = time.perf_counter()
    try:
        with _direct.open(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError:
        pass  # it answered (a 503 names a dependency that is down): the time still counts
    except OSError:
        return timeout * 1000
    return (time.perf_counter() - started) * 1000


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a GET of `url` answers 200."""
    try:
        with _direct.open(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False
