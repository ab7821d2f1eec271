"""GET /metrics: Prometheus exposition of this process (or, multiprocess, this machine) and the broker.

For operators only (gateway.auth.callers.is_operator): Prometheus sends
`Authorization: Bearer <METRICS_TOKEN>`.
"""

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from gateway.auth.callers import is_operator
from gateway.http.errors import error_response
from processing.jobs.prometheus import BrokerCollector

live_registry = CollectorRegistry(auto_describe=False)
live_registry.register(BrokerCollector())


def process_registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    return registry


def metrics(request: HttpRequest) -> HttpResponse:
    if not is_operator(request):
        return error_response(
            401,
            "authentication_required",
            "send 'Authorization: Bearer <METRICS_TOKEN>', or a staff API key",
        )
    body = generate_latest(process_registry()) + generate_latest(live_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
