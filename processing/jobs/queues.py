"""What the broker holds: per-queue depth, in-flight, dead letters and consumers."""

import base64
import json
import logging
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlparse

import dramatiq
import pika
from django.conf import settings
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

from processing.jobs import pools

logger = logging.getLogger(__name__)


def queue_names() -> tuple[str, ...]:
    """Every pool's queue (processing.jobs.pools): "images", and those TRAFFIC_SPLIT and WORKER_POOL name."""
    named = pools.all_pools(settings.TRAFFIC_SPLIT)
    return named if settings.WORKER_POOL in named else (*named, settings.WORKER_POOL)


def queue_status(only: str | None = None) -> dict[str, Any]:
    """{"broker": ..., "available": bool, "queues": [...]} read from the broker itself: every pool's and
    the callbacks', or `only` one pool's."""
    return read_queues((only,) if only else (*queue_names(), pools.CALLBACK_QUEUE))


def read_queues(names: tuple[str, ...]) -> dict[str, Any]:
    """queue_status of these queues."""
    broker = dramatiq.get_broker()
    if isinstance(broker, StubBroker):
        return {"broker": "embedded", "available": True, "queues": [stub_queue(broker, q) for q in names]}
    try:
        found = rabbitmq_queues(names)
    except Exception as exc:  # down or unreachable: say so, don't fail the caller
        logger.warning("could not read queue depths from RabbitMQ: %s", exc)
        return {"broker": "rabbitmq", "available": False, "queues": [unknown_queue(q) for q in names]}
    return {"broker": "rabbitmq", "available": True, "queues": found}


def stub_queue(broker: StubBroker, name: str) -> dict[str, Any]:
    def size(queue_name: str) -> int:
        queue = broker.queues.get(queue_name)
        return queue.qsize() if queue is not None else 0

    return {
        "name": name,
        "ready": size(name),
        "delayed": size(dq_name(name)),
        "in_flight": None,  # the stub broker doesn't track unacknowledged messages
        "dead_letters": len(broker.dead_letters_by_queue.get(name, [])),
        "consumers": None,
    }


def unknown_queue(name: str) -> dict[str, Any]:
    return dict.fromkeys(("ready", "delayed", "in_flight", "dead_letters", "consumers")) | {"name": name}


def broker_url() -> str:
    """RabbitMQ's URL as Dramatiq connects to it, with the short connect timeouts settings add."""
    broker: dict[str, Any] = settings.DRAMATIQ_BROKER
    url: str = broker["OPTIONS"]["url"]
    return url


def rabbitmq_queues(queues: tuple[str, ...]) -> list[dict[str, Any]]:
    parameters = pika.URLParameters(broker_url())
    connection = pika.BlockingConnection(parameters)
    try:
        return [rabbitmq_queue(connection, parameters.virtual_host, name) for name in queues]
    finally:
        connection.close()


def rabbitmq_queue(connection: pika.BlockingConnection, vhost: str, name: str) -> dict[str, Any]:
    ready, consumers = declared_counts(connection, name)
    delayed, _ = declared_counts(connection, dq_name(name))
    dead, _ = declared_counts(connection, xq_name(name))
    return {
        "name": name,
        "ready": ready,
        "delayed": delayed,
        "in_flight": unacknowledged(vhost, name),
        "dead_letters": dead,
        "consumers": consumers,
    }


def unconsumed(names: Iterable[str]) -> list[str]:
    """Those of these RabbitMQ queues that no worker consumes, read on one connection."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url()))
    try:
        return [name for name in names if declared_counts(connection, name)[1] == 0]
    finally:
        connection.close()


def declared_counts(connection: pika.BlockingConnection, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) by a passive declare; a queue nobody declared yet is empty."""
    channel = connection.channel()  # a failed passive declare closes its channel: one each
    try:
        method = channel.queue_declare(queue=queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker:
        return 0, 0
    channel.close()
    return method.message_count, method.consumer_count


def unacknowledged(vhost: str, queue: str) -> int | None:
    """Messages delivered but not yet acknowledged, from the management API when it is configured."""
    url = settings.RABBITMQ_MANAGEMENT_URL
    if not url:
        return None
    parts = urlparse(url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
    request = urllib.request.Request(f"{base}/api/queues/{quote(vhost, safe='')}/{quote(queue)}")
    credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            count: int = json.load(response).get("messages_unacknowledged", 0)
            return count
    except Exception as exc:
        logger.warning("management API unavailable: %s", exc)
        return None
