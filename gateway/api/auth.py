"""Who is calling (API key, browser session or anonymous), and how often they may."""

import threading

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyHeader, HttpBearer
from ninja.throttling import BaseThrottle
from ninja.utils import check_csrf

from gateway.auth import owners, ratelimit, tokens
from gateway.http.errors import ApiError
from gateway.live import waiting

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


class CallerRateLimit(BaseThrottle):
    """A fixed-window limit per API key (per session and client address, or per address when
    anonymous), counted in Redis in the full stack, and so shared by every gateway process and
    machine (gateway/auth/ratelimit.py)."""

    def __init__(self, scope: str):
        self.scope = scope  # "submit" or "read": RATE_LIMIT_SUBMIT / RATE_LIMIT_READ
        self._local = threading.local()  # wait() is called right after allow_request(), in the same thread

    def allow_request(self, request: HttpRequest) -> bool:
        if waiting.is_final_pass(request):  # a long poll's answer, counted when it came in
            return True
        usage = ratelimit.charge(request, self.scope)
        if usage is None:
            return True
        request.rate_limit = usage
        self._local.wait = max(usage.reset, 1)
        return not usage.limited

    def wait(self) -> int:
        return self._local.wait


SUBMIT_LIMIT = [CallerRateLimit("submit")]
READ_LIMIT = [CallerRateLimit("read")]
