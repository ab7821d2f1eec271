"""Who is calling (API key, browser session or anonymous), and how often they may."""

import ipaddress
import logging
import threading

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyHeader, HttpBearer
from ninja.throttling import BaseThrottle
from ninja.utils import check_csrf

from gateway.auth import owners, ratelimit, tokens
from gateway.http.errors import ApiError

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def invalid_key() -> ApiError:
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked")


class BearerKey(HttpBearer):
    """Authorization: Bearer <API key>, or <JWT> from the identity provider when JWT_* is set."""

    openapi_bearerFormat = "API key or JWT"
    openapi_description = (
        "An API key (`manage.py create_api_key`), or, when the gateway is configured with JWT_JWKS_URL "
        "or JWT_PUBLIC_KEY_FILE, an RS256/ES256 token of the identity provider: signature, issuer, "
        "audience and expiry are checked, and JWT_OWNER_CLAIM owns the jobs."
    )

    def __call__(self, request: HttpRequest) -> owners.Caller | None:
        # Credentials that are there but wrong are refused, never ignored for weaker ones.
        header = request.headers.get("Authorization")
        if header is not None and not header.lower().startswith("bearer "):
            raise invalid_key()
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, token: str) -> owners.Caller:
        try:
            return owners.from_credential(token) or _raise(invalid_key())
        except tokens.InvalidToken as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None
        except tokens.KeysUnavailable:
            raise ApiError(
                503, "token_keys_unavailable", "the identity provider's keys can't be fetched; try again soon"
            ) from None


class HeaderKey(APIKeyHeader):
    """X-API-Key: <key>"""

    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> owners.Caller | None:
        if not key:
            return None
        return owners.from_key(key) or _raise(invalid_key())


def session_or_anonymous(request: HttpRequest) -> owners.Caller | None:
    """A browser with a session the site issued is its session (CSRF applies); others are anonymous,
    if allowed. A cookie naming no stored session is no session: the API never makes one."""
    caller = (
        owners.from_session(request.session, request.user) if owners.has_session_cookie(request) else None
    )
    if caller is not None:
        if request.method not in SAFE_METHODS and check_csrf(request):
            raise ApiError(403, "csrf_failed", "a browser session must send the CSRF token (X-CSRFToken)")
        return caller
    if settings.API_KEYS_REQUIRED:
        return None  # ninja answers 401
    return owners.Caller()


def _raise(error: Exception):
    raise error


API_AUTH = [BearerKey(), HeaderKey(), session_or_anonymous]


def client_address(request: HttpRequest) -> str:
    """The client's address; X-Forwarded-For counts only when the request came through a trusted proxy."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not forwarded or remote not in settings.TRUSTED_PROXIES:
        return remote
    # The right-most address a trusted proxy did not add is the client.
    for address in reversed([a.strip() for a in forwarded.split(",")]):
        if address not in settings.TRUSTED_PROXIES and is_ip(address):
            return address
    return remote


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def rate_limit_identities(request: HttpRequest) -> list[str]:
    """Whom a request is counted against: an API key; a session and its client address (anyone can
    get sessions, one per page view, so changing them must buy nothing); or the address alone."""
    caller = getattr(request, "auth", None)
    address = f"address:{client_address(request)}"
    if caller is None or caller.kind == "anonymous":
        return [address]
    if caller.kind == "session":
        return [caller.identity, address]
    return [caller.identity]


def charge(request: HttpRequest, scope: str, amount: int = 1) -> ratelimit.Usage | None:
    """Count `amount` requests in `scope` ("submit" or "read") for the caller; None when Redis is down."""
    rate = getattr(settings, f"RATE_LIMIT_{scope.upper()}")
    try:
        return ratelimit.hit_all(scope, rate_limit_identities(request), rate, amount)
    except ratelimit.CounterUnavailable as exc:  # Redis is down: serve without limits
        logger.warning("rate limit not applied: %s", exc)
        return None


def charge_more_submissions(request: HttpRequest, count: int) -> None:
    """A batch is as many submissions as it has files: the throttle counted one, count the rest.

    Raises a 429 ApiError when they take the caller past the limit."""
    if count <= 0:
        return
    usage = charge(request, "submit", count)
    if usage is None:
        return
    request.rate_limit = usage
    if usage.limited:
        wait = max(usage.reset, 1)
        raise ApiError(429, "rate_limited", f"too many submissions; try again in {wait}s", retry_after=wait)


class CallerRateLimit(BaseThrottle):
    """A fixed-window limit per API key (per session and client address, or per address when
    anonymous), counted in Redis in the full stack, and so shared by every gateway process and
    machine (gateway/auth/ratelimit.py)."""

    def __init__(self, scope: str):
        self.scope = scope  # "submit" or "read": RATE_LIMIT_SUBMIT / RATE_LIMIT_READ
        self._local = threading.local()  # wait() is called right after allow_request(), in the same thread

    def allow_request(self, request: HttpRequest) -> bool:
        usage = charge(request, self.scope)
        if usage is None:
            return True
        request.rate_limit = usage
        self._local.wait = max(usage.reset, 1)
        return not usage.limited

    def wait(self) -> int:
        return self._local.wait


SUBMIT_LIMIT = [CallerRateLimit("submit")]
READ_LIMIT = [CallerRateLimit("read")]
