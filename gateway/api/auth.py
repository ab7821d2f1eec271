"""The API's callers (gateway.auth.callers says who they are; here, the API's answers when it refuses
them) and how often they may call."""

import threading

from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security.base import AuthBase
from ninja.throttling import BaseThrottle

from gateway.auth import callers, ratelimit, tokens
from gateway.http.errors import ApiError


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


class CallerRequest(HttpRequest):
    """A request that the router's authentication let through: `auth` is its caller. Its id is
    gateway.http.middleware's, given by the client (`request_id_given`) or made there."""

    auth: callers.Caller
    request_id: str
    request_id_given: bool


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


class CallerRateLimit(BaseThrottle):
    """A fixed-window limit per API key (per session and client address, or per address when
    anonymous), counted in Redis in the full stack, and so shared by every gateway process and
    machine (gateway/auth/ratelimit.py)."""

    def __init__(self, scope: str):
        self.scope = scope  # "submit" or "read": RATE_LIMIT_SUBMIT / RATE_LIMIT_READ
        self._local = threading.local()  # wait() is called right after allow_request(), in the same thread

    def allow_request(self, request: HttpRequest) -> bool:
        usage = ratelimit.charge(request, self.scope)
        if usage is None:
            return True
        ratelimit.keep_usage(request, usage)
        self._local.wait = max(usage.reset, 1)
        return not usage.limited

    def wait(self) -> int:
        seconds: int = self._local.wait
        return seconds


SUBMIT_LIMIT: list[BaseThrottle] = [CallerRateLimit("submit")]
READ_LIMIT: list[BaseThrottle] = [CallerRateLimit("read")]
