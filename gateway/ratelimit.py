"""Fixed-window request counters: in Redis (shared by every gateway process) in one round trip per
request, or in the local cache in the embedded default.

One connection pool per process, made on first use; a counter that cannot be reached is reported as
`CounterUnavailable`, quickly (short socket timeouts), and not asked again for a few seconds, so that
callers can serve without limits rather than wait on a Redis that is down.
"""

import functools
import threading
import time
import zlib
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import cache

KEY_PREFIX = "rl:"
REDIS_TIMEOUT_SECONDS = 0.25  # loopback or LAN Redis answers in well under a millisecond
RETRY_AFTER_FAILURE_SECONDS = 5  # Redis down: don't block every request on it

# INCR and EXPIRE in one command: one round trip, and a counter never outlives its window.
HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CounterUnavailable(Exception):
    """The counter store (Redis) could not be reached."""


@dataclass(frozen=True)
class Usage:
    count: int  # requests in this window, this one included
    limit: int
    reset: int  # seconds until the window ends

    @property
    def limited(self) -> bool:
        return self.count > self.limit

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


def parse_rate(rate: str) -> tuple[int, int]:
    """ "120/m" → (120, 60); "10/5s" → (10, 5)."""
    count, per = rate.split("/")
    return int(count), int(per[:-1] or 1) * PERIODS[per[-1]]


def window_end(identity: str, period: int, now: int) -> int:
    """The end of `identity`'s current window: windows are fixed, but spread over the period
    per identity, so that not every client's counter resets in the same second."""
    end = now - now % period + zlib.crc32(identity.encode()) % period
    return end + period if end < now else end


def hit(scope: str, identity: str, rate: str) -> Usage:
    """Count one request by `identity` in `scope` against `rate` (e.g. "120/m")."""
    limit, period = parse_rate(rate)
    now = int(time.time())
    end = window_end(identity, period, now)
    key = f"{KEY_PREFIX}{scope}:{limit}/{period}:{identity}:{end}"
    expiry = end - now + 1
    count = redis_count(settings.REDIS_URL, key, expiry) if settings.REDIS_URL else cache_count(key, expiry)
    return Usage(count=count, limit=limit, reset=end - now)


def cache_count(key: str, expiry: int) -> int:
    """The embedded default: the local (per-process) cache."""
    if cache.add(key, 1, expiry):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr()
        raise CounterUnavailable("the counter expired while counting") from None


_down_until = 0.0
_down_lock = threading.Lock()


def redis_count(url: str, key: str, expiry: int) -> int:
    global _down_until
    if time.monotonic() < _down_until:
        raise CounterUnavailable("Redis failed recently")
    try:
        return int(hit_script(url)(keys=[key], args=[expiry]))
    except redis.RedisError as exc:
        with _down_lock:
            _down_until = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        raise CounterUnavailable(str(exc)) from exc


@functools.cache
def hit_script(url: str) -> redis.commands.core.Script:
    """The counting script on this process's pool for `url` (redis-py renews the pool after a fork)."""
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    return client.register_script(HIT_SCRIPT)


def reset_failure_memory() -> None:
    """Forget a recent Redis failure (tests, and a process that knows Redis is back)."""
    global _down_until
    _down_until = 0.0
