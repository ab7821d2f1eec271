import json
import os
import socket
import uuid

import dramatiq
import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django_dramatiq.utils import load_middleware
from dramatiq.brokers.stub import StubBroker

from bench.private_services import PrivateServices
from bench.s3 import SeaweedServer
from gateway.ops import snapshots
from processing import events
from processing.callbacks.deliveries import deliver_callback
from processing.events import sender
from processing.worker.actors import process_job
from tests.services import CONFIGURED, XDIST_WORKER, clear_rate_limits, require, url_of
from tests.stack import LiveStack, refused_port

ACTORS = [process_job, deliver_callback]

# The processes tests start (servers, workers, manage.py) often have services configured, where the
# embedded default SECRET_KEY is refused (project.checks, darkroom.E005).
os.environ.setdefault("SECRET_KEY", "the-test-suite-key-never-used-outside-the-tests")

if XDIST_WORKER and os.getenv("REDIS_URL"):  # the processes tests start use this worker's Redis database
    os.environ["REDIS_URL"] = url_of("redis")


def pytest_collection_modifyitems(items):
    """The files whose tests need the real services first, the others after them, each file's tests
    in their order: those files start servers and workers of their own and take the longest, so
    under pytest-xdist (`make test`, with --no-loadscope-reorder) the short ones fill the gaps they
    leave and every process ends at about the same time. xdist's own order, by how many tests a
    file has, would start the longest files last."""
    needs_services = {item.path for item in items if item.get_closest_marker("services")}
    items.sort(key=lambda item: item.path not in needs_services)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and before it is dropped at the end of the run, no PostgreSQL
    session left on it: a session that another thread of this process (or a child) still holds
    makes the drop fail ("being accessed by other users") and leaves the database behind."""
    yield
    if connection.vendor != "postgresql":
        return
    # From the maintenance database, as Django drops a test database: not through the pool.
    with django_db_blocker.unblock(), connection._nodb_cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )


@pytest.fixture(autouse=True)
def no_sender_left_on_a_test_s_layer():
    """A test that points the channel layer elsewhere (a Redis that is down, say) leaves this process's
    sender on that layer; once its settings are restored (this fixture comes first, so it is torn down
    after `settings`), the sender is retired as the next announce on another layer would retire it,
    and no longer tells a dead Redis what it dropped, every few seconds for the rest of the run."""
    yield
    running = sender._sender
    if running is not None and running.layer is not get_channel_layer():
        running.replaced = True


@pytest.fixture(autouse=True)
def redis_of_this_worker(settings):
    """This process's settings name REDIS_URL as the environment had it when they were read: under
    pytest-xdist, point them at this worker's Redis database (tests.services.url_of)."""
    configured, ours = CONFIGURED["redis"], url_of("redis")
    if not XDIST_WORKER or configured != settings.REDIS_URL:
        return

    def moved(place: dict, key: str) -> dict:
        return {**place, key: ours} if isinstance(place, dict) and place.get(key) == configured else place

    settings.REDIS_URL = ours
    settings.CACHES = {alias: moved(cache, "LOCATION") for alias, cache in settings.CACHES.items()}
    layers = {}
    for alias, layer in settings.CHANNEL_LAYERS.items():
        config = layer.get("CONFIG", {})
        hosts = [moved(host, "address") for host in config.get("hosts", [])]
        layers[alias] = {**layer, "CONFIG": {**config, "hosts": hosts}} if hosts else layer
    settings.CHANNEL_LAYERS = layers


@pytest.fixture(autouse=True)
def anonymous_callers_allowed(settings):
    """The suite's requests are anonymous unless a test presents a key or requires one: with services
    configured (CI), API_KEYS_REQUIRED would otherwise default to true (tests/test_settings.py)."""
    settings.API_KEYS_REQUIRED = False


@pytest.fixture
def in_memory_layer(settings):
    """The embedded default's channel layer (CI sets REDIS_URL, which would make it Redis)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def redis_layer(settings):
    """The full stack's channel layer, on a prefix of its own: (a Redis client, the prefix)."""
    require("redis")
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "processing.events.layer.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url_of("redis"), "socket_timeout": None}], "prefix": prefix},
        }
    }
    client = redis.Redis.from_url(url_of("redis"))
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


class RecordingSender:
    """Stands in for this process's events.Sender: keeps every event it is handed, as its frame."""

    def __init__(self):
        self.events: list[dict] = []  # {"type": "job.queued", "job": {...}}, in the order sent

    def send(self, groups: list[str], message: dict) -> None:
        self.events.append(json.loads(message["text"]))


@pytest.fixture
def sent(monkeypatch) -> RecordingSender:
    """The job events this process sends from now on (none reaches a channel layer)."""
    recording = RecordingSender()
    monkeypatch.setattr(events, "current_sender", lambda: recording)
    return recording


@pytest.fixture(autouse=True)
def admission_ledger_in_tmp(settings, tmp_path):
    """The in-process workers of each test keep their memory admission apart from other tests'."""
    settings.WORKER_ADMISSION_LEDGER = str(tmp_path / "admission.json")


@pytest.fixture(autouse=True)
def fresh_snapshots():
    """Health and queue readings start anew: a test's answer is of the state it arranged."""
    snapshots.Snapshot.forget_all()


@pytest.fixture
def snapshot_clock(monkeypatch) -> list[float]:
    """The clock gateway.ops.snapshots reads, moved by the test: `snapshot_clock[0] += seconds`."""
    now = [1000.0]
    monkeypatch.setattr(snapshots, "clock", lambda: now[0])
    return now


@pytest.fixture
def count_calls(monkeypatch):
    """`count_calls(module, "name")`: the calls of module.name from now on, which still does its work."""

    def count(owner, name: str) -> list[tuple]:
        calls, real = [], getattr(owner, name)

        def counted(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
        return calls

    return count


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    """Each test stores its files in a folder of its own."""
    default = settings.STORAGES["default"]
    options = {**default.get("OPTIONS", {}), "location": str(tmp_path / "media")}
    settings.STORAGES = {**settings.STORAGES, "default": {**default, "OPTIONS": options}}


@pytest.fixture
def stub_broker():
    """Dramatiq's StubBroker with our middleware, the actors bound to it (RabbitMQ is for the live tests)."""
    broker = StubBroker(middleware=[load_middleware(path) for path in settings.DRAMATIQ_BROKER["MIDDLEWARE"]])
    broker.emit_after("process_boot")
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)
    yield broker
    broker.flush_all()
    broker.close()
    dramatiq.set_broker(previous)
    for actor in ACTORS:
        actor.broker = previous


@pytest.fixture
def stub_worker(stub_broker):
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def run_jobs(stub_broker, stub_worker):
    """Process everything queued, then return: `run_jobs()` after submitting."""

    def run():
        stub_broker.join(process_job.queue_name, fail_fast=False)
        stub_worker.join()

    return run


@pytest.fixture
def private_rabbitmq(monkeypatch):
    """A RabbitMQ of the test's own, for a test that stops it: stacks made in the test use it."""
    yield from serve_privately(monkeypatch, "rabbitmq")


@pytest.fixture
def private_services(monkeypatch):
    """PostgreSQL, RabbitMQ and Redis of the test's own, for a test that restarts them."""
    yield from serve_privately(monkeypatch, "postgres", "rabbitmq", "redis")


def serve_privately(monkeypatch, *names: str):
    require(*names)  # the machine's, as a sign the servers are installed here
    with PrivateServices(*names) as services:
        for name, value in services.env.items():
            monkeypatch.setenv(name, value)
        yield services


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory):
    """PostgreSQL + RabbitMQ + Redis + a uvicorn server; tests start the workers they need."""
    require("postgres", "rabbitmq", "redis")
    with LiveStack(tmp_path_factory.mktemp("stack")) as stack:
        stack.start_server()
        yield stack


@pytest.fixture(scope="module")
def worker(live_stack):
    """One worker process for the live stack's jobs, for the module's tests."""
    live_stack.start_worker("worker")
    yield
    live_stack.stop("worker")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS, bench/s3.py) for the whole run; each user makes its own bucket."""
    require("s3")
    with SeaweedServer(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def api_key(db):
    """Make an API key: `api_key("name", staff=False)` gives the headers that present it."""
    from gateway.models import ApiKey

    def make(name: str = "client", staff: bool = False) -> dict:
        _, presented = ApiKey.issue(name, is_staff=staff)
        return {"X-API-Key": presented}

    return make


@pytest.fixture(autouse=True)
def rate_limits_from_zero(settings, redis_of_this_worker):
    """No test starts with the counts of the ones before it (all are the same client, 127.0.0.1), nor
    with the limits off because Redis failed in one before it (the limiter then stays off a few seconds)."""
    from gateway.auth import ratelimit

    ratelimit.reset_failure_memory()
    if settings.REDIS_URL:
        clear_rate_limits(settings.REDIS_URL)


@pytest.fixture
def fresh_rate_limits(settings):
    """Rate-limit counters from zero: in Redis (REDIS_URL) they outlive a test run, and a recent
    Redis failure would otherwise leave the limits off for the next few seconds."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    from gateway.auth import ratelimit

    def forget() -> None:
        ratelimit.reset_failure_memory()
        if isinstance(caches["default"], LocMemCache):  # the embedded default's counters
            caches["default"].clear()
        if settings.REDIS_URL:
            clear_rate_limits(settings.REDIS_URL)

    forget()
    yield
    forget()


@pytest.fixture
def silent_redis():
    """A hung Redis: connections are accepted (by the kernel: a listening socket) but never answered."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        yield f"redis://127.0.0.1:{listening.getsockname()[1]}/0"


@pytest.fixture
def refusing_redis():
    """A Redis that is down: nothing listens on its port."""
    with refused_port() as port:
        yield f"redis://127.0.0.1:{port}/0"
