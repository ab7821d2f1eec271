"""Who is calling, and which jobs they may see.

An API key owns the jobs it creates; a browser session owns its own (through a
token kept in the session, so it survives logging in); staff see everything. Only
sessions the site issued count: a cookie naming no stored session is no session, and
only the pages (`issue_session`) make new ones, never the API or the WebSocket.
Requests with neither (scripts in the embedded default, when API keys are not
required) share the anonymous owner. Someone else's job is always a 404.
"""

import hmac
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from gateway.auth import tokens
from gateway.models import ApiKey
from processing.jobs.submissions import Owner
from processing.models import Job, find_job, owned_by

SESSION_OWNER_KEY = "darkroom_owner"
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None = None
    session_owner: str = ""
    user_id: int | None = None
    is_staff: bool = False
    subject: str = ""  # a bearer token's owner claim

    @property
    def kind(self) -> str:
        if self.key:
            return "api_key"
        return "token" if self.subject else "session" if self.session_owner else "anonymous"

    @property
    def owner(self) -> Owner:
        """The owner this caller's new jobs get."""
        return Owner(
            key=str(self.key.pk) if self.key else "",
            session=self.session_owner,
            user_id=self.user_id,
            subject=self.subject,
        )

    @property
    def identity(self) -> str:
        """A stable name for rate limits, idempotency keys and live-event groups."""
        return self.owner.identity

    @property
    def viewer(self) -> str | None:
        """Whose jobs this caller sees: an owner identity, or None for everyone's (staff). All that a
        long-lived holder of the caller (a WebSocket) needs to keep of it."""
        return None if self.is_staff else self.identity

    def visible_job(self, job_id: uuid.UUID) -> Job | None:
        """The job, if this caller may see it."""
        return find_job(job_id, self.viewer)

    def visible_jobs(self):
        return jobs_visible_to(self.viewer)


def jobs_visible_to(viewer: str | None):
    """The jobs of owner identity `viewer`, or everyone's for None (see Caller.viewer)."""
    return Job.objects.all() if viewer is None else Job.objects.filter(owned_by(viewer))


def from_credential(presented: str) -> Caller | None:
    """The caller a bearer credential names: a token (JWT) when tokens are enabled and it is one,
    else an API key; None for an unknown key. Raises tokens.InvalidToken or KeysUnavailable."""
    if tokens.enabled() and tokens.looks_like_jwt(presented):
        owner = tokens.verify(presented)
        return Caller(subject=owner.subject, is_staff=owner.is_staff)
    return from_key(presented)


def from_key(presented: str) -> Caller | None:
    key = ApiKey.find(presented)
    if key is None:
        return None
    now = timezone.now()
    # To the minute: a write per request would cost more than the request's own work.
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return Caller(key=key, is_staff=key.is_staff)


def from_session(session, user) -> Caller | None:
    """The caller of a session the site issued, making its owner token on first use; None for no
    session, or one the client made up (anyone can send any cookie: it must not buy an owner)."""
    if session is None or not is_issued(session):
        return None
    return session_caller(session, user)


def issue_session(session, user) -> Caller:
    """The browser's caller on our pages: its session, or a new one the site issues now."""
    return from_session(session, user) or session_caller(session, user)


def is_issued(session) -> bool:
    """True when the session is one the site stored (loading an unknown key leaves it keyless)."""
    session.get(SESSION_OWNER_KEY)  # loads the session
    return session.session_key is not None


def session_caller(session, user) -> Caller:
    owner = session.get(SESSION_OWNER_KEY)
    if owner is None:
        owner = session[SESSION_OWNER_KEY] = uuid.uuid4().hex
    signed_in = user is not None and user.is_authenticated
    return Caller(
        session_owner=owner, user_id=user.pk if signed_in else None, is_staff=signed_in and user.is_staff
    )


def has_session_cookie(request) -> bool:
    return settings.SESSION_COOKIE_NAME in request.COOKIES


def is_operator(request) -> bool:
    """May see /metrics and the health checks' details: the holder of METRICS_TOKEN (as a Bearer
    token, what Prometheus sends), a staff API key, or a signed-in staff user."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else request.headers.get("X-API-Key", "")
    token = settings.METRICS_TOKEN
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return True
    if presented:
        caller = from_key(presented)
        return caller is not None and caller.is_staff
    user = getattr(request, "user", None)
    return user is not None and user.is_authenticated and user.is_staff
