"""GET /metrics: Prometheus exposition of this process (or, multiprocess, this machine) and the broker."""

import os

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from processing.metrics import BrokerCollector

live_registry = CollectorRegistry(auto_describe=False)
live_registry.register(BrokerCollector())


def process_registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def metrics(request):
    body = generate_latest(process_registry()) + generate_latest(live_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
