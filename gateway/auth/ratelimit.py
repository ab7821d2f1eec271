"""Fixed-window request counters: in Redis (shared by every gateway process) in one round trip per
request, or in the local cache in the embedded default.

One connection per request thread, made on first use; a counter that cannot be reached is reported as
`CounterUnavailable`, quickly (short socket timeouts), and not asked again for a few seconds, so that
callers can serve without limits rather than wait on a Redis that is down.

A request is charged to its caller (and, for a session or no caller, its client address: an IPv6
client by its /64): the API's throttles (gateway.api.auth) and the upload form charge submissions
through `charge_submissions`; the form asks `refuse_spent_submissions` before it reads its body.
"""

import functools
import ipaddress
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TypeAlias

import redis
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from prometheus_client import Counter

from gateway.http.errors import ApiError

logger = logging.getLogger(__name__)

KEY_PREFIX = "rl:"
REDIS_TIMEOUT_SECONDS = 0.25  # loopback or LAN Redis answers in well under a millisecond
RETRY_AFTER_FAILURE_SECONDS = 5  # Redis down: don't block every request on it

# INCRBY and EXPIRE of every counter a request is charged to, in one command: one round trip,
# and a counter never outlives its window. ARGV: the amount, then each key's expiry.
HIT_SCRIPT = """
local amount = tonumber(ARGV[1])
local counts = {}
for i, key in ipairs(KEYS) do
    local count = redis.call('INCRBY', key, amount)
    if count == amount then
        redis.call('EXPIRE', key, ARGV[i + 1])
    end
    counts[i] = count
end
return counts
"""

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def hit(scope: str, identity: str, rate: str, amount: int = 1) -> Usage:
    """Count `amount` requests by `identity` in `scope` against `rate` (e.g. "120/m")."""
    return hit_all(scope, [identity], rate, amount)


def hit_all(scope: str, identities: list[str], rate: str, amount: int = 1) -> Usage:
    """Charge `amount` requests to each of `identities` (e.g. a session and its client address), each
    against `rate`, in one round trip; the usage of the one closest to its limit."""
    limit, period = parse_rate(rate)
    now = int(time.time())
    ends = [window_end(identity, period, now) for identity in identities]
    keys = [
        f"{KEY_PREFIX}{scope}:{limit}/{period}:{identity}:{end}"
        for identity, end in zip(identities, ends, strict=True)
    ]
    expiries = [end - now + 1 for end in ends]
    if settings.REDIS_URL:
        counts = redis_counts(settings.REDIS_URL, keys, expiries, amount)
    else:
        counts = [cache_count(key, expiry, amount) for key, expiry in zip(keys, expiries, strict=True)]
    usages = [
        Usage(count=count, limit=limit, reset=end - now) for count, end in zip(counts, ends, strict=True)
    ]
    return max(usages, key=lambda usage: (usage.count, usage.reset))


def cache_count(key: str, expiry: int, amount: int = 1) -> int:
    """The embedded default: the local (per-process) cache."""
    if cache.add(key, amount, expiry):
        return amount
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add() and incr()
        raise CounterUnavailable("the counter expired while counting") from None


_down_until = 0.0
_down_lock = threading.Lock()


def redis_counts(url: str, keys: list[str], expiries: list[int], amount: int) -> list[int]:
    global _down_until
    if time.monotonic() < _down_until:
        raise CounterUnavailable("Redis failed recently")
    try:
        return [int(count) for count in hit_script(url)(keys=keys, args=[amount, *expiries])]
    except redis.RedisError as exc:
        with _down_lock:
            _down_until = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        raise CounterUnavailable(str(exc)) from exc


_per_thread = threading.local()


def hit_script(url: str) -> redis.commands.core.Script:
    """The counting script on this thread's own connection to `url`, made on first use (and again in a
    forked process). A connection per request thread rather than redis-py's shared pool: taking a
    connection from the pool and giving it back cost half as much CPU as the command itself."""
    pid = os.getpid()
    if getattr(_per_thread, "pid", None) != pid:
        _per_thread.pid, _per_thread.scripts = pid, {}
    scripts: dict[str, redis.commands.core.Script] = _per_thread.scripts
    if url not in scripts:
        client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            single_connection_client=True,
        )
        scripts[url] = client.register_script(HIT_SCRIPT)
    return scripts[url]


def reset_failure_memory() -> None:
    """Forget a recent Redis failure (tests, and a process that knows Redis is back)."""
    global _down_until
    _down_until = 0.0


# --- Charging a request: whom, and the 429 --------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The client's address: X-Forwarded-For names it only when the request came through a trusted proxy.

    The server may have read the header already (uvicorn's --forwarded-allow-ips, given the same
    TRUSTED_PROXIES): REMOTE_ADDR is then the client it found there. A header that neither the server
    nor we may trust is counted and warned about (`note_untrusted_forwarded`): behind a proxy whose
    address is not in TRUSTED_PROXIES, every client is counted as the proxy, in one counter."""
    remote: str = request.META.get("REMOTE_ADDR", "")
    forwarded: str = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not forwarded:
        return remote
    client = forwarded_client(forwarded)
    if is_trusted_proxy(remote):
        return client or remote
    if remote != client:
        note_untrusted_forwarded(remote)
    return remote


def forwarded_client(forwarded: str) -> str | None:
    """The right-most address of X-Forwarded-For that no trusted proxy added: the client, as the
    proxies nearest to us saw it (anything left of it, the client may have written itself)."""
    for address in reversed([a.strip() for a in forwarded.split(",")]):
        if is_ip(address) and not is_trusted_proxy(address):
            return address
    return None


def is_trusted_proxy(address: str) -> bool:
    return is_ip(address) and any(ipaddress.ip_address(address) in network for network in trusted_networks())


def trusted_networks() -> tuple[IPNetwork, ...]:
    return networks_of(tuple(settings.TRUSTED_PROXIES))


@functools.cache
def networks_of(addresses: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """TRUSTED_PROXIES as networks: an address is its own /32 or /128 (project.config checks each entry)."""
    return tuple(ipaddress.ip_network(address, strict=False) for address in addresses)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


UNTRUSTED_FORWARDED = Counter(
    "darkroom_untrusted_forwarded",
    "Requests with X-Forwarded-For from a peer not in TRUSTED_PROXIES (the header was ignored)",
)
_warned_untrusted_forwarded = threading.Event()


def note_untrusted_forwarded(peer: str) -> None:
    """Count a forwarded header we ignored; warn once per process, since behind a proxy it would be
    every request."""
    UNTRUSTED_FORWARDED.inc()
    if not _warned_untrusted_forwarded.is_set():
        _warned_untrusted_forwarded.set()
        logger.warning(
            "X-Forwarded-For from %s, which is not in TRUSTED_PROXIES: ignored, and the request is counted "
            "against %s's rate limits. Behind a proxy, add its address to TRUSTED_PROXIES "
            "(docs/security.md); this warning is given once per process, the metric "
            "darkroom_untrusted_forwarded_total counts every such request.",
            peer,
            peer,
        )


def counted_address(address: str) -> str:
    """Whom a client address is counted as: an IPv4 address alone; an IPv6 address by its /64, the
    block one subscriber is given (one /64 holds 2**64 addresses: counted one by one, it would never
    reach a limit)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:203.0.113.9, an IPv4 client of a dual-stack socket
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network((ip, 64), strict=False))


def rate_limit_identities(request: HttpRequest) -> list[str]:
    """Whom a request is counted against: an API key; a session and its client address (anyone can
    get sessions, one per page view, so changing them must buy nothing); or the address alone. An
    address is counted as `counted_address` says (an IPv6 client by its /64)."""
    caller = getattr(request, "auth", None)
    address = f"address:{counted_address(client_address(request))}"
    if caller is None or caller.owner.kind == "anonymous":
        return [address]
    if caller.owner.kind == "session":
        return [caller.owner.identity, address]
    return [caller.owner.identity]


def charge(request: HttpRequest, scope: str, amount: int = 1) -> Usage | None:
    """Count `amount` requests in `scope` ("submit" or "read") for the caller; None when Redis is down."""
    rate = getattr(settings, f"RATE_LIMIT_{scope.upper()}")
    try:
        return hit_all(scope, rate_limit_identities(request), rate, amount)
    except CounterUnavailable as exc:  # Redis is down: serve without limits
        logger.warning("rate limit not applied: %s", exc)
        return None


def keep_usage(request: HttpRequest, usage: Usage) -> None:
    """The caller's usage, kept on the request for gateway.http.middleware's RateLimit-* headers."""
    request.rate_limit = usage  # type: ignore[attr-defined]  # Django's request takes attributes of ours


def charge_submissions(request: HttpRequest, count: int) -> None:
    """Charge `count` submissions to the request's caller (`request.auth`): a batch costs one per file,
    from the API and from the upload form alike. Raises the 429 ApiError when they take the caller
    past RATE_LIMIT_SUBMIT."""
    if count <= 0:
        return
    usage = charge(request, "submit", count)
    if usage is None:
        return
    keep_usage(request, usage)
    if usage.limited:
        raise too_many_submissions(usage)


def refuse_spent_submissions(request: HttpRequest) -> None:
    """Raise the 429 ApiError when the caller (`request.auth`) has no submission left in this window:
    asked before a request's body is read, so that a caller over its limit is refused before its
    upload is received. Charges nothing (the submissions are charged once the body is read)."""
    usage = charge(request, "submit", 0)
    if usage is None:
        return
    keep_usage(request, usage)
    if usage.remaining == 0:
        raise too_many_submissions(usage)


def too_many_submissions(usage: Usage) -> ApiError:
    wait = max(usage.reset, 1)
    return ApiError(429, "rate_limited", f"too many submissions; try again in {wait}s", retry_after=wait)
