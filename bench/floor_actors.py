"""The worker side of `make bench-worker-floor`: an actor that does nothing, on a private queue, on
the broker of one of the workers compared. The benchmark starts `dramatiq` with one of the functions
below as its broker (`bench.floor_actors:project_worker`): Dramatiq calls it in the worker process,
then takes the broker it set. Importing this module declares nothing."""

import importlib
import os
from pathlib import Path

import dramatiq

QUEUE = "bench-floor"
ACTOR = "floor_noop"


def noop(marker: str | None = None) -> None:
    """Nothing, but for a round's last message: it leaves `marker`, the file the benchmark waits for
    (one worker thread takes the messages in their order, so every message before it is done)."""
    if marker:
        Path(marker).touch()


def declare() -> None:
    dramatiq.actor(noop, queue_name=QUEUE, actor_name=ACTOR)


def project_worker() -> None:
    """The project's worker process: Django set up, the project's broker settings and Dramatiq
    middleware, its actors loaded, as a worker of `make bench` starts (WORKER_MODULES)."""
    from scaler.backends.processes import WORKER_MODULES

    for module in WORKER_MODULES:
        importlib.import_module(module)
    declare()


def dramatiq_defaults() -> None:
    """Dramatiq's own RabbitMQ broker with its default middleware, no Django."""
    set_rabbitmq_broker(middleware=None)


def no_middleware() -> None:
    """Dramatiq's RabbitMQ broker with no middleware at all: its message loop alone."""
    set_rabbitmq_broker(middleware=[])


def set_rabbitmq_broker(middleware: list | None) -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    # confirm_delivery as the project's broker has it (it only changes how a message is published).
    broker = RabbitmqBroker(url=os.environ["BROKER_URL"], confirm_delivery=True, middleware=middleware)
    dramatiq.set_broker(broker)
    declare()
