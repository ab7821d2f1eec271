"""Prometheus metrics for jobs, recorded as each change is announced (processing.events); with
them the open WebSockets, and the queues as the broker reports them at scrape time. GET /metrics
(gateway/ops/metrics.py) serves them.

With PROMETHEUS_MULTIPROC_DIR set, every process on the machine writes its samples
there and /metrics adds them up, so worker-side figures appear on the gateway.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:  # for the annotation alone: the metrics load no models
    from processing.models import Job

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

JOBS_SUBMITTED = Counter("darkroom_jobs_submitted", "Jobs accepted", ["service", "pool"])
JOBS_FINISHED = Counter("darkroom_jobs_finished", "Jobs that reached an end", ["service", "status", "pool"])
PROCESSING_SECONDS = Histogram(
    "darkroom_job_processing_seconds",
    "Decode, operation, encode and store",
    ["service"],
    buckets=SECONDS_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "darkroom_job_queue_wait_seconds",
    "From acceptance to a worker's claim",
    ["service"],
    buckets=SECONDS_BUCKETS,
)
CALLBACK_ATTEMPTS = Counter(
    "darkroom_callback_attempts",
    "Callback attempts by outcome: delivered, retried (to be tried again) or given_up",
    ["outcome"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "darkroom_websocket_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)

FINISHING_EVENTS = {"job.completed": "completed", "job.failed": "failed", "job.cancelled": "cancelled"}


def record(job: "Job", event: str) -> None:
    if event == "job.queued":
        JOBS_SUBMITTED.labels(job.service, job.pool).inc()
    elif event in FINISHING_EVENTS:
        JOBS_FINISHED.labels(job.service, FINISHING_EVENTS[event], job.pool).inc()
        if event == "job.completed" and job.processing_ms is not None:
            PROCESSING_SECONDS.labels(job.service).observe(job.processing_ms / 1000)
        if event == "job.completed" and job.queue_wait_ms is not None:
            QUEUE_WAIT_SECONDS.labels(job.service).observe(job.queue_wait_ms / 1000)


class BrokerCollector:
    """Queue depths, dead letters and consumers, read from the broker at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from processing.jobs.queues import queue_status
        from processing.jobs.stats import in_flight_counts

        status = queue_status()
        families = {
            "ready": GaugeMetricFamily("darkroom_queue_ready", "Messages waiting", labels=["queue"]),
            "delayed": GaugeMetricFamily(
                "darkroom_queue_delayed", "Messages waiting for a retry", labels=["queue"]
            ),
            "in_flight": GaugeMetricFamily(
                "darkroom_queue_in_flight", "Delivered, not acknowledged", labels=["queue"]
            ),
            "dead_letters": GaugeMetricFamily(
                "darkroom_queue_dead_letters", "Dead-lettered", labels=["queue"]
            ),
            "consumers": GaugeMetricFamily("darkroom_queue_consumers", "Consumers", labels=["queue"]),
        }
        for queue in status["queues"]:
            for field, family in families.items():
                if queue[field] is not None:
                    family.add_metric([queue["name"]], queue[field])
        yield from families.values()
        up = GaugeMetricFamily("darkroom_broker_up", "1 when the broker answered")
        up.add_metric([], 1 if status["available"] else 0)
        yield up
        jobs = GaugeMetricFamily("darkroom_jobs_in_flight", "Jobs not yet finished", labels=["status"])
        counts = in_flight_counts()
        jobs.add_metric(["queued"], counts["jobs_queued"])
        jobs.add_metric(["processing"], counts["jobs_processing"])
        yield jobs
