"""Whose a job is: an API key, a bearer token's subject, a browser session, or the anonymous owner.

An owner's `identity` ("key:12", "token:alice", "session:…" or "anonymous") is its one name
outside the job row: idempotency keys are stored under it, rate limits count it, and the owner's
live-event group is named by a hash of it. Its format is stored, so it does not change;
`Owner.from_identity` is the one place that reads it back.

A subject is kept whole or not at all: two subjects that differ only past a cut would be one owner.
"""

from dataclasses import dataclass
from typing import Any

from django.db.models import Q

ANONYMOUS = "anonymous"
# The longest subject the job row holds (Job.owner_subject), and so the longest identity there is.
MAX_SUBJECT_LENGTH = 255
MAX_IDENTITY_LENGTH = len("token:") + MAX_SUBJECT_LENGTH


class SubjectTooLong(ValueError):
    """A subject longer than MAX_SUBJECT_LENGTH: it can't be stored whole, so it owns nothing."""


@dataclass(frozen=True, slots=True)  # slots: each WebSocket keeps one for as long as it is open
class Owner:
    """One owner of jobs. When more than one is set, the key wins, then the subject, then the session;
    `user_id` (a signed-in user) is recorded on the job but names no owner."""

    key: str = ""  # an API key's id
    session: str = ""  # a browser session's owner token (gateway.auth.callers)
    user_id: int | None = None
    subject: str = ""  # a bearer token's owner claim

    def __post_init__(self) -> None:
        if len(self.subject) > MAX_SUBJECT_LENGTH:
            raise SubjectTooLong(f"an owner's subject is at most {MAX_SUBJECT_LENGTH} characters")

    @classmethod
    def from_identity(cls, identity: str) -> "Owner":
        """The owner `identity` names; ValueError for a string that names none."""
        if identity == ANONYMOUS:
            return cls()
        kind, _, value = identity.partition(":")
        if kind == "key" and value:
            return cls(key=value)
        if kind == "token" and value:
            return cls(subject=value)
        if kind == "session" and value:
            return cls(session=value)
        raise ValueError(f"{identity!r} names no owner")

    @property
    def kind(self) -> str:
        """One of "key", "token", "session" or "anonymous", as the identity begins."""
        if self.key:
            return "key"
        return "token" if self.subject else "session" if self.session else ANONYMOUS

    @property
    def identity(self) -> str:
        if self.key:
            return f"key:{self.key}"
        if self.subject:
            return f"token:{self.subject}"
        if self.session:
            return f"session:{self.session}"
        return ANONYMOUS

    @classmethod
    def of_row(cls, row: Any) -> "Owner":
        """The owner a row's owner columns (`fields`) name: a job's or an asset's."""
        return cls(
            key=row.owner_key, session=row.owner_session, user_id=row.owner_user_id, subject=row.owner_subject
        )

    def fields(self) -> dict[str, Any]:
        """The job row's owner columns."""
        return {
            "owner_key": self.key,
            "owner_subject": "" if self.key else self.subject,
            "owner_session": "" if self.key or self.subject else self.session,
            "owner_user_id": self.user_id,
        }


def owned_by(owner: Owner) -> Q:
    """The jobs of `owner` (a filter on the job row's owner columns)."""
    if owner.key:
        return Q(owner_key=owner.key)
    if owner.subject:
        return Q(owner_key="", owner_subject=owner.subject)
    if owner.session:
        return Q(owner_key="", owner_subject="", owner_session=owner.session)
    return Q(owner_key="", owner_subject="", owner_session="")
