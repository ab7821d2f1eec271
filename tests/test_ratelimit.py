"""Rate-limit counters: shared by processes through Redis, one round trip a request, open without Redis."""

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import redis
from prometheus_client import REGISTRY

from gateway.auth import ratelimit
from gateway.models import ApiKey
from tests.services import IN_CI, require, url_of
from tests.stack import HangingUp, refused_port, start_on_a_free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_limits")]

COUNT_IN_ANOTHER_PROCESS = """
import django
django.setup()
from gateway.auth import ratelimit
print(ratelimit.hit("read", {identity!r}, {rate!r}).count)
"""


def count_in_another_process(identity: str, rate: str, redis_url: str) -> int:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "REDIS_URL": redis_url}
    code = COUNT_IN_ANOTHER_PROCESS.format(identity=identity, rate=rate)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.fixture
def private_redis():
    """A redis-server of this test's own, so that its command counts are ours alone."""
    require("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        message = "needs the redis-server program"
        pytest.fail(message) if IN_CI else pytest.skip(message)

    def start(port: int) -> tuple[subprocess.Popen, redis.Redis] | None:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 60
        while server.poll() is None:
            try:
                if client.info("server")["process_id"] == server.pid:  # ours, not another's on the port
                    return server, client
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        client.close()
        return None  # it could not listen there (the port was taken): another port

    (server, client), port = start_on_a_free_port(start)
    try:
        yield client, f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def commands_called(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): figures["calls"]
        for name, figures in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }


def test_two_processes_share_one_counter_through_redis(client, settings):
    require("redis")
    settings.REDIS_URL = url_of("redis")
    settings.RATE_LIMIT_READ = "5/d"
    key, presented = ApiKey.issue("shared")

    assert count_in_another_process(f"key:{key.pk}", "5/d", settings.REDIS_URL) == 1
    answer = client.get("/api/v1/jobs", headers={"X-API-Key": presented})

    assert answer.status_code == 200
    assert answer["X-RateLimit-Limit"] == "5" and answer["X-RateLimit-Remaining"] == "3"


def test_a_request_costs_one_redis_round_trip(client, settings, private_redis):
    redis_client, settings.REDIS_URL = private_redis
    settings.RATE_LIMIT_READ = "1000/d"
    assert client.get("/api/v1/jobs").status_code == 200  # loads the script into this Redis
    redis_client.config_resetstat()

    answers = [client.get("/api/v1/jobs") for _ in range(5)]

    assert [a["X-RateLimit-Remaining"] for a in answers] == ["998", "997", "996", "995", "994"]
    # One EVALSHA per request; the INCRBY is the script's own, inside that one command.
    assert commands_called(redis_client) == {"evalsha": 5, "incrby": 5}


def test_with_redis_unreachable_requests_are_served_without_limits_and_without_waiting(client, settings):
    failing = HangingUp()  # takes each connection and hangs up: every Redis call fails
    settings.REDIS_URL = f"redis://127.0.0.1:{failing.port}/0"
    settings.RATE_LIMIT_READ = "1/d"
    try:
        answers = [client.get("/api/v1/jobs") for _ in range(3)]
    finally:
        failing.close()

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert "X-RateLimit-Limit" not in answers[0]
    # Without waiting: one try, no retries (and their back-offs), and the later requests don't ask.
    assert failing.connections == 1


def test_a_redis_that_does_not_answer_is_not_asked_again_for_a_while(client, settings):
    with refused_port() as port:
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        client.get("/api/v1/jobs")
    settings.REDIS_URL = url_of("redis")  # back, but not asked until the pause is over
    assert "X-RateLimit-Limit" not in client.get("/api/v1/jobs")


def test_the_embedded_default_counts_in_the_local_cache(client, settings):
    settings.REDIS_URL = ""
    settings.RATE_LIMIT_READ = "1/d"
    assert client.get("/api/v1/jobs").status_code == 200
    limited = client.get("/api/v1/jobs")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("rate", "limit", "period"),
    [("120/m", 120, 60), ("10/s", 10, 1), ("10/5s", 10, 5), ("1000/d", 1000, 86400)],
)
def test_a_rate_reads_as_a_limit_per_period(rate, limit, period):
    assert ratelimit.parse_rate(rate) == (limit, period)


def test_a_window_ends_within_one_period_and_stays_put_inside_it():
    ends = {ratelimit.window_end("key:1", 60, now) for now in range(1000, 1060)}
    assert len(ends) <= 2 and all(1000 <= end < 1120 for end in ends)
    end = ratelimit.window_end("key:1", 60, 1000)
    assert ratelimit.window_end("key:1", 60, end) == end


# --- Whom an address is counted as -----------------------------------------------------------
def reads_from(client, address: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.get("/api/v1/jobs", headers=headers, REMOTE_ADDR=address).status_code


def test_an_ipv6_client_is_counted_by_its_64_not_by_each_of_its_addresses(client, settings):
    """One subscriber holds a whole /64: 2**64 addresses, each a fresh counter if counted alone."""
    settings.RATE_LIMIT_READ = "2/d"
    same_64 = ["2001:db8:1:2::1", "2001:db8:1:2::abcd", "2001:db8:1:2:ffff:ffff:ffff:ffff"]
    assert [reads_from(client, address) for address in same_64] == [200, 200, 429]
    assert reads_from(client, "2001:db8:1:3::1") == 200  # the next /64: another subscriber


def test_an_ipv4_client_is_counted_by_its_full_address(client, settings):
    settings.RATE_LIMIT_READ = "1/d"
    assert [reads_from(client, "198.51.100.1"), reads_from(client, "198.51.100.1")] == [200, 429]
    assert reads_from(client, "198.51.100.2") == 200
    assert reads_from(client, "::ffff:198.51.100.1") == 429  # the same client through a dual-stack socket


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:DB8:0:0:1::1", "2001:db8::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
    ],
)
def test_an_address_is_counted_as_itself_or_its_64(address, counted):
    assert ratelimit.counted_address(address) == counted


def test_a_trusted_proxy_may_be_a_network(client, settings):
    settings.RATE_LIMIT_READ = "1/d"
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]  # an ingress controller's pods
    assert reads_from(client, "10.1.2.3", forwarded="198.51.100.7") == 200
    assert reads_from(client, "10.4.5.6", forwarded="198.51.100.8") == 200  # another client: its own limit
    assert reads_from(client, "10.7.8.9", forwarded="198.51.100.7, 10.1.2.3") == 429  # the first, via two


def untrusted_forwarded() -> float:
    return REGISTRY.get_sample_value("darkroom_untrusted_forwarded_total") or 0.0


@pytest.fixture
def not_warned_yet(monkeypatch):
    monkeypatch.setattr(ratelimit, "_warned_untrusted_forwarded", threading.Event())


@pytest.mark.usefixtures("not_warned_yet")
def test_x_forwarded_for_from_an_untrusted_peer_is_counted_and_warned_about_once(client, caplog):
    """Behind a proxy missing from TRUSTED_PROXIES every client is counted as the proxy: the operator
    must hear of it."""
    before = untrusted_forwarded()
    with caplog.at_level(logging.WARNING, logger="gateway.auth.ratelimit"):
        for client_address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            assert reads_from(client, "192.0.2.10", forwarded=client_address) == 200
    assert untrusted_forwarded() - before == 3
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1 and "192.0.2.10" in warnings[0] and "TRUSTED_PROXIES" in warnings[0]


@pytest.mark.usefixtures("not_warned_yet")
def test_x_forwarded_for_from_a_trusted_proxy_or_read_by_the_server_is_not_counted(client, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    before = untrusted_forwarded()
    assert reads_from(client, "127.0.0.1", forwarded="198.51.100.1") == 200  # from the proxy itself
    # uvicorn's --forwarded-allow-ips read the header already: REMOTE_ADDR is the client it names.
    assert reads_from(client, "198.51.100.2", forwarded="198.51.100.2, 127.0.0.1") == 200
    assert reads_from(client, "198.51.100.3") == 200  # no header at all
    assert untrusted_forwarded() == before
