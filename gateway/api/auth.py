"""The API's callers (gateway.auth.callers says who they are; here, the API's answers when it refuses
them) and how often they may call."""

import ipaddress
import logging
import threading

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security.base import AuthBase
from ninja.throttling import BaseThrottle

from gateway.auth import callers, ratelimit, tokens
from gateway.http.errors import ApiError

logger = logging.getLogger(__name__)


def identified(request: HttpRequest) -> callers.Caller:
    """The request's caller (gateway.auth.callers), or the API's answer to a refused one."""
    try:
        caller = callers.of_request(request)
    except callers.InvalidKey as exc:
        raise ApiError(401, "invalid_api_key", str(exc)) from None
    except tokens.InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None
    except tokens.KeysUnavailable:
        raise ApiError(
            503, "token_keys_unavailable", "the identity provider's keys can't be fetched; try again soon"
        ) from None
    except callers.CsrfFailed as exc:
        raise ApiError(403, "csrf_failed", str(exc)) from None
    if caller is None:
        raise AuthenticationError  # answered with 401 authentication_required
    return caller


class CallerScheme(AuthBase):
    """A way to present a credential, as the OpenAPI document describes it. Each runs the same check,
    which reads every credential (then a session, then the anonymous caller): the first scheme ninja
    asks answers for the request, and the others are there for the document."""

    def __call__(self, request: HttpRequest) -> callers.Caller:
        return identified(request)


class BearerKey(CallerScheme):
    """Authorization: Bearer <API key>, or <JWT> from the identity provider when JWT_* is set."""

    openapi_type = "http"
    openapi_scheme = "bearer"
    openapi_bearerFormat = "API key or JWT"
    openapi_description = (
        "An API key (`manage.py create_api_key`), or, when the gateway is configured with JWT_JWKS_URL "
        "or JWT_PUBLIC_KEY_FILE, an RS256/ES256 token of the identity provider: signature, issuer, "
        "audience and expiry are checked, and JWT_OWNER_CLAIM owns the jobs."
    )


class HeaderKey(CallerScheme):
    """X-API-Key: <key>"""

    openapi_type = "apiKey"
    openapi_in = "header"
    openapi_name = "X-API-Key"


API_AUTH = [BearerKey(), HeaderKey()]


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
    if caller is None or caller.owner.kind == "anonymous":
        return [address]
    if caller.owner.kind == "session":
        return [caller.owner.identity, address]
    return [caller.owner.identity]


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
