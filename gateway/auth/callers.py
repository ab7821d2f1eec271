"""Who is calling, and which jobs they may see: the one place that reads credentials.

The API (gateway.api.auth), the WebSocket handshake (gateway.live.consumers) and the operator
check (`is_operator`: /metrics, the health checks' details) all ask `identify`, so that the same
credential makes the same caller everywhere:

- `Authorization: Bearer <credential>`, else `X-API-Key: <credential>` (a WebSocket may send it as
  the subprotocol `darkroom.key.<credential>` instead, which browsers can): a bearer token (JWT)
  when tokens are enabled and it looks like one (gateway.auth.tokens), else an API key.
- Else a browser session the site issued. It owns its jobs through a token kept in the session, so
  that they survive logging in. Only the pages (`issue_session`) make sessions, never the API or the
  WebSocket: anyone can send any cookie, and a cookie naming no stored session is no session. A
  session is issued under a new key, as Django gives it one when someone signs in.
  When API keys are required, only a signed-in user's session counts (`session_may_call`): a key
  means someone the operator let in, and anyone may open a page; the pages send visitors to sign in.
- Else, when API keys are not required (the embedded default), the anonymous owner, shared.

A credential that is there but wrong is refused with a named error (REFUSALS), never passed over
for a weaker one. Staff (a staff key, token or signed-in user) see every job; anyone else sees
their owner's, and someone else's job is always a 404.
"""

import hmac
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from types import SimpleNamespace
from typing import Any, Protocol, cast

import jwt
from django.conf import settings
from django.contrib import auth
from django.contrib.sessions.backends.base import SessionBase
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils import timezone
from django.utils.datastructures import CaseInsensitiveMapping
from django.utils.functional import SimpleLazyObject

from gateway.auth import tokens
from gateway.http import csrf
from gateway.models import ApiKey, hash_secret
from processing.models import Job, find_job
from processing.owners import Owner, owned_by

SESSION_OWNER_KEY = "darkroom_owner"
KEY_SUBPROTOCOL_PREFIX = "darkroom.key."
LAST_USED_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# How many of a caller's most recent jobs each view shows. The lite pages are rendered anew on
# every visit and every refresh while a job runs, for slow connections: a few rows. The live stream
# sends its list once a connection, and the desktop and mobile UIs build their job list from it.
RECENT_JOBS_ON_LITE_HOME = 5
RECENT_JOBS_ON_JOB_LIST = 10
RECENT_JOBS_ON_STREAM = 50


class User(Protocol):
    """What a caller takes from the request's user: Django's User or AnonymousUser, or a lazy one."""

    @property
    def pk(self) -> Any: ...
    @property
    def is_authenticated(self) -> bool: ...
    @property
    def is_staff(self) -> bool: ...


class InvalidKey(Exception):
    """A credential matches no live API key, or Authorization is not a Bearer credential."""

    def __init__(self, message: str = "the API key is unknown or revoked"):
        super().__init__(message)


class CsrfFailed(Exception):
    """A browser session's unsafe request came without its CSRF token: another site may have made it."""

    def __init__(self, message: str = "a browser session must send the CSRF token (X-CSRFToken)"):
        super().__init__(message)


# Every way `identify` refuses a caller.
REFUSALS = (InvalidKey, tokens.InvalidToken, tokens.KeysUnavailable, CsrfFailed)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the owner their new jobs get, and whether they are staff."""

    owner: Owner = Owner()
    is_staff: bool = False
    # When its credential stops being accepted, by time.time(): a token's expiry. None for a key, a
    # session or the anonymous caller (a key ends when revoked: see revoked_keys).
    expires_at: float | None = None
    # Where its jobs' callbacks go when a submission names no callback_url: an API key's default.
    callback_url: str = ""

    @property
    def sees_jobs_of(self) -> Owner | None:
        """Whose jobs this caller sees: its owner's, or None for every owner's (staff). All that a
        long-lived holder of the caller (a WebSocket) needs to keep of it."""
        return None if self.is_staff else self.owner

    def visible_job(self, job_id: uuid.UUID) -> Job | None:
        """The job, if this caller may see it."""
        return find_job(job_id, self.sees_jobs_of)

    def visible_jobs(self) -> QuerySet[Job]:
        return jobs_visible_to(self.sees_jobs_of)


def jobs_visible_to(owner: Owner | None) -> QuerySet[Job]:
    """The jobs of `owner`, or every job for None (see Caller.sees_jobs_of)."""
    return Job.objects.all() if owner is None else Job.objects.filter(owned_by(owner))


def recent_jobs(owner: Owner | None, count: int) -> list[Job]:
    """The `count` newest of the jobs visible to `owner` (a RECENT_JOBS_ON_* count)."""
    return list(jobs_visible_to(owner).order_by("-created_at")[:count])


# --- Who is calling --------------------------------------------------------------------


def identify(
    credential: str | None,
    session: SessionBase | None,
    user: User | None,
    csrf_failed: Callable[[], bool] | None = None,
) -> Caller | None:
    """The caller that presents `credential` (see presented_credential), else the caller of `session`
    if the site issued it, else the anonymous caller; None when API keys are required and there is
    no credential or session. Refuses (REFUSALS) a credential that names no caller, and a session's
    request when `csrf_failed()` says it lacks its CSRF token."""
    if credential is not None:
        return from_credential(credential)
    caller = from_session(session, user)
    if caller is not None:
        if csrf_failed is not None and csrf_failed():
            raise CsrfFailed
        return caller
    return None if settings.API_KEYS_REQUIRED else Caller()


def of_request(request: HttpRequest) -> Caller | None:
    """The caller behind an HTTP request (see identify)."""
    session = request.session if has_session_cookie(request) else None
    return identify(
        presented_credential(request.headers),
        session,
        getattr(request, "user", None),
        csrf_failed=lambda: request.method not in SAFE_METHODS and csrf_header_refused(request),
    )


def csrf_header_refused(request: HttpRequest) -> bool:
    """True when a session's unsafe request fails the CSRF check on its X-CSRFToken header. The header
    alone: a token in the body would mean reading (and, for an upload, storing) the body first."""
    return csrf.refusal(request, token_in_body=False) is not None


def of_handshake(scope: Mapping[str, Any]) -> Caller | None:
    """The caller behind a WebSocket handshake (see identify), from its ASGI scope. No CSRF check:
    gateway.live.routing refuses pages of other origins at the handshake.

    The session is read here rather than by channels' AuthMiddlewareStack, which keeps a session, a
    user and three more copies of the scope in memory for as long as each socket is open.
    """
    headers = CaseInsensitiveMapping(
        {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or ()}
    )
    credential = subprotocol_credential(scope)
    if credential is None:
        credential = presented_credential(headers)
    session = session_named_by(headers.get("Cookie", ""))
    # Read only if the session was issued; it stands in for the user, as request.user does.
    user = cast(User, SimpleLazyObject(lambda: auth.get_user(request_of(session))))
    return identify(credential, session, user)


def request_of(session: SessionBase | None) -> HttpRequest:
    """What auth.get_user reads of a request: its session, and nothing else."""
    return cast(HttpRequest, SimpleNamespace(session=session))


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The credential of `Authorization: Bearer …`, else of `X-API-Key`; None for neither. Raises
    InvalidKey for an Authorization header of another scheme: it is not passed over for X-API-Key."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise InvalidKey
        return credential.strip()
    return (headers.get("X-API-Key") or "").strip() or None


def subprotocol_credential(scope: Mapping[str, Any]) -> str | None:
    """The credential a browser's WebSocket sends as a subprotocol (it can't send headers), if any."""
    protocols: Iterable[str] = scope.get("subprotocols") or ()
    for protocol in protocols:
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(KEY_SUBPROTOCOL_PREFIX)
    return None


def session_named_by(cookie_header: str) -> SessionBase | None:
    """The session the session cookie names (not loaded yet); None without the cookie."""
    session_key = parse_cookie(cookie_header).get(settings.SESSION_COOKIE_NAME)
    if session_key is None:
        return None
    session: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return session


def from_credential(presented: str) -> Caller:
    """The caller a credential names: a token (JWT) when tokens are enabled and it is one, else an API
    key. Raises InvalidKey, tokens.InvalidToken or tokens.KeysUnavailable."""
    if tokens.enabled() and tokens.looks_like_jwt(presented):
        owner = tokens.verify(presented)
        return Caller(
            Owner(subject=owner.subject), is_staff=owner.is_staff, expires_at=verified_token_expiry(presented)
        )
    return from_key(presented)


def verified_token_expiry(verified: str) -> float:
    """When a token that tokens.verify accepted stops being accepted: its `exp` (verify requires it),
    plus the leeway verify allows. Its claims are read again, unchecked: they were checked just now."""
    claims = jwt.decode(verified, options={"verify_signature": False})
    return float(claims["exp"]) + tokens.LEEWAY_SECONDS


def from_key(presented: str) -> Caller:
    key = live_key(presented)
    if key is None:
        raise InvalidKey
    now = timezone.now()
    # To the minute: a write per request would cost more than the request's own work.
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now  # on the kept copy too (live_key), or each request would write again
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key_caller(key)


# Each live API key this process has seen, as read at most KEY_FRESH_SECONDS ago, by the hash of its
# presented string: a client's requests cost no key read each. So a key revoked (or made staff, or not)
# is refused within KEY_FRESH_SECONDS by every process; the process that saves the key forgets its
# copies at once (forget_keys). Unknown keys aren't kept: a flood of made-up ones costs no memory.
KEY_FRESH_SECONDS = 5.0
KEYS_KEPT = 1000
_live_keys: dict[str, tuple[float, ApiKey]] = {}
clock = time.monotonic  # what KEY_FRESH_SECONDS is counted by


def live_key(presented: str) -> ApiKey | None:
    """ApiKey.find(presented), from this process's copy when it was read within KEY_FRESH_SECONDS."""
    digest, now = hash_secret(presented), clock()
    kept = _live_keys.get(digest)
    if kept is not None and now - kept[0] < KEY_FRESH_SECONDS:
        return kept[1]
    key = ApiKey.find(presented)
    if key is None:
        _live_keys.pop(digest, None)
        return None
    if len(_live_keys) >= KEYS_KEPT:
        _live_keys.clear()
    _live_keys[digest] = (now, key)
    return key


def forget_keys() -> None:
    """Drop this process's copies of API keys (a key was saved or deleted here: gateway.apps)."""
    _live_keys.clear()


def revoked_keys(key_ids: Collection[str]) -> set[str]:
    """Of these API keys (as Owner.key names them), those revoked or deleted since: what a long-lived
    holder of a key's caller (a WebSocket) re-checks, in one query for the keys of all of them."""
    live = ApiKey.objects.filter(pk__in=key_ids, revoked_at__isnull=True).values_list("pk", flat=True)
    return set(key_ids) - {str(pk) for pk in live}


def key_caller(key: ApiKey) -> Caller:
    return Caller(Owner(key=str(key.pk)), is_staff=key.is_staff, callback_url=key.callback_url)


def from_session(session: SessionBase | None, user: User | None) -> Caller | None:
    """The caller of a session the site issued, making its owner token on first use; None for no
    session, one the client made up (anyone can send any cookie: it must not buy an owner), or one
    that may not call (see session_may_call)."""
    if session is None or not session_may_call(user) or not is_issued(session):
        return None
    return session_caller(session, user)


def issue_session(session: SessionBase, user: User | None) -> Caller | None:
    """The browser's caller on our pages: its session, or a new one the site issues now; None when
    its user may not call (see session_may_call): the pages send them to sign in."""
    if not session_may_call(user):
        return None
    if session.get(SESSION_OWNER_KEY) is None:
        give_owner(session)
    return session_caller(session, user)


def give_owner(session: SessionBase) -> None:
    """Make the session an owner's under a new key: a key known before (one planted in the browser,
    or a stored session without an owner, such as an admin's sign-in) must not open the jobs it will
    own. A session without a stored key gets a new one when it is saved."""
    if session.session_key is not None:
        session.cycle_key()
    session[SESSION_OWNER_KEY] = uuid.uuid4().hex


def session_may_call(user: User | None) -> bool:
    """Whether a browser session is a caller: always in the embedded default, and only a signed-in
    user's when API keys are required, so that visiting a page buys no way around a key."""
    return not settings.API_KEYS_REQUIRED or is_signed_in(user)


def is_signed_in(user: User | None) -> bool:
    return user is not None and user.is_authenticated


def is_issued(session: SessionBase) -> bool:
    """True when the session is one the site stored (loading an unknown key leaves it keyless)."""
    session.get(SESSION_OWNER_KEY)  # loads the session
    return session.session_key is not None


def session_caller(session: SessionBase, user: User | None) -> Caller:
    owner = session.get(SESSION_OWNER_KEY)
    if owner is None:
        owner = session[SESSION_OWNER_KEY] = uuid.uuid4().hex
    if user is None or not user.is_authenticated:
        return Caller(Owner(session=owner))
    return Caller(Owner(session=owner, user_id=user.pk), is_staff=user.is_staff)


def has_session_cookie(request: HttpRequest) -> bool:
    return settings.SESSION_COOKIE_NAME in request.COOKIES


# --- Operators ------------------------------------------------------------------------


def is_operator(request: HttpRequest) -> bool:
    """May see /metrics and the health checks' details: the holder of METRICS_TOKEN (as a Bearer
    token, what Prometheus sends, or X-API-Key), or a staff caller: a staff API key or token, or a
    signed-in staff user. Anyone else, refused credentials included, is not (no error: the health
    checks still answer them, with less)."""
    try:
        if holds_metrics_token(request.headers):
            return True
        caller = of_request(request)
    except REFUSALS:
        return False
    return caller is not None and caller.is_staff


def holds_metrics_token(headers: Mapping[str, str]) -> bool:
    token, presented = settings.METRICS_TOKEN, presented_credential(headers)
    return bool(token and presented and hmac.compare_digest(presented.encode(), token.encode()))
