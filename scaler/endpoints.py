"""The scaler's two endpoints: JSON health (default port 8082) and Prometheus metrics (9090).

When METRICS_TOKEN is set, they are for its holders, as the gateway's /metrics is
(gateway.auth.callers): the metrics need it, and anyone else's health check is told only whether the
scaler is healthy (enough for probes), not its queues, pools and decisions.
"""

import json
import logging
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.utils.datastructures import CaseInsensitiveMapping
from prometheus_client import CollectorRegistry, MetricsHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.auth import callers
from scaler.status import Status

logger = logging.getLogger(__name__)


def may_read_details(headers: Message) -> bool:
    """Anyone when METRICS_TOKEN is empty (the endpoints listen on loopback unless SCALER_HOST says
    otherwise, darkroom.W101); else the holder of the token only."""
    if not settings.METRICS_TOKEN:
        return True
    try:
        return callers.holds_metrics_token(CaseInsensitiveMapping(dict(headers.items())))
    except callers.InvalidKey:  # another Authorization scheme
        return False


def serve(handler: type[BaseHTTPRequestHandler], host: str, port: int, name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"scaler-{name}", daemon=True).start()
    return server


# --- health ------------------------------------------------------------------------------
def health_handler(status: Status) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] not in ("/", "/health"):
                self.send_error(404)
                return
            snapshot = status.snapshot()
            if not may_read_details(self.headers):
                snapshot = {"status": snapshot["status"]}
            body = json.dumps(snapshot, indent=2).encode()
            self.send_response(200 if status.healthy() else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass  # a probe every few seconds would drown the scaler's own log

    return HealthHandler


def serve_health(status: Status, host: str, port: int) -> ThreadingHTTPServer:
    server = serve(health_handler(status), host, port, "health")
    logger.info("scaler health on http://%s:%d/health", host, port)
    return server


# --- metrics -----------------------------------------------------------------------------
class ScalerCollector:
    """Prometheus families computed from the status snapshot at each scrape."""

    def __init__(self, status: Status):
        self.status = status

    def collect(self):
        snapshot = self.status.snapshot()
        yield instances_family(snapshot)
        yield from queue_families(snapshot)
        if snapshot["load"]:
            yield gauge(
                "darkroom_scaler_gateway_load_score", "The gateways' load score", snapshot["load"]["score"]
            )
            yield gauge(
                "darkroom_scaler_gateway_response_seconds",
                "Mean /health/ready time of the gateways in service",
                snapshot["load"]["response_ms"] / 1000,
            )
        yield events_family(snapshot)
        replacements = CounterMetricFamily(
            "darkroom_scaler_replacements",
            "Crashed processes replaced (not scaling actions)",
            labels=["pool"],
        )
        for pool, count in snapshot["replacements"].items():
            replacements.add_metric([pool], count)
        yield replacements
        yield gauge(
            "darkroom_scaler_healthy",
            "1 when the last check ran recently and without error",
            1 if snapshot["status"] == "ok" else 0,
        )


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def instances_family(snapshot: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "darkroom_scaler_instances",
        "Instances per pool: the target, those running, those draining",
        labels=["pool", "state"],
    )
    for pool, description in snapshot["instances"].items():
        for state in ("target", "running", "draining", "in_service"):
            if description.get(state) is not None:
                family.add_metric([pool, state], description[state])
    return family


def queue_families(snapshot: dict):
    messages = GaugeMetricFamily(
        "darkroom_scaler_queue_messages",
        "Messages in RabbitMQ as the scaler last read them",
        labels=["queue", "state"],
    )
    for queue in snapshot.get("queues", []):
        for state in ("ready", "delayed"):
            if queue.get(state) is not None:
                messages.add_metric([queue["name"], state], queue[state])
    yield messages
    if snapshot.get("jobs_in_flight") is not None:
        yield gauge("darkroom_scaler_jobs_in_flight", "Jobs being processed", snapshot["jobs_in_flight"])


def events_family(snapshot: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "darkroom_scaler_scaling_events", "Scaling actions taken", labels=["pool", "action"]
    )
    for event in snapshot["scaling_events"]:
        family.add_metric([event["pool"], event["action"]], event["count"])
    return family


def metrics_handler(status: Status) -> type[BaseHTTPRequestHandler]:
    # A registry of its own: the scaler's figures only, whatever PROMETHEUS_MULTIPROC_DIR says.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScalerCollector(status))

    class ScalerMetricsHandler(MetricsHandler):
        def do_GET(self):
            if may_read_details(self.headers):
                super().do_GET()
                return
            body = b"send 'Authorization: Bearer <METRICS_TOKEN>'\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ScalerMetricsHandler.registry = registry
    return ScalerMetricsHandler


def serve_metrics(status: Status, host: str, port: int) -> ThreadingHTTPServer:
    server = serve(metrics_handler(status), host, port, "metrics")
    logger.info("scaler metrics on http://%s:%d/metrics", host, port)
    return server
