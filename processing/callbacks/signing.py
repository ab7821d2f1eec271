"""Callback secrets and signatures: an owner's secret signs each attempt, as payment platforms sign
their webhooks.

    Darkroom-Signature: t=1718000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

`t` is when the attempt was signed (Unix seconds) and `v1` the hex HMAC-SHA256, keyed with the
secret, of `t`, a full stop and the body's bytes: a receiver recomputes it and compares, and refuses
a `t` too far from its clock (a replay). For a day after a rotation the header carries a second `v1`,
by the previous secret, so that a receiver may change its secret after ours (docs/callbacks.md).

A secret is kept per owner identity (processing.owners: an API key's is "key:<id>"), issued by
`manage.py callback_secret` or the API keys' admin, and shown once.
"""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.utils import timezone

from processing.models import CallbackSecret

SIGNATURE_HEADER = "Darkroom-Signature"
SECRET_PREFIX = "drcb_"
ROTATION_OVERLAP = timedelta(days=1)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>", keyed with the secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header(signing: list[str], timestamp: int, body: bytes) -> str:
    """The Darkroom-Signature header's value: the time, and a signature by each secret in `signing`."""
    return ",".join([f"t={timestamp}", *(f"v1={signature(secret, timestamp, body)}" for secret in signing)])


def signing_secrets(owner: str, now: datetime | None = None) -> list[str]:
    """The secrets the owner's callbacks are signed with now: its secret, and the one before it for a
    day after a rotation; [] for an owner without one."""
    record = CallbackSecret.objects.filter(owner=owner).first()
    if record is None:
        return []
    now = now or timezone.now()
    recent = record.previous_secret and record.previous_until and record.previous_until > now
    return [record.secret, record.previous_secret] if recent else [record.secret]


def has_secret(owner: str) -> bool:
    return CallbackSecret.objects.filter(owner=owner).exists()


def issue(owner: str) -> str:
    """A new secret for the owner's callbacks, returned to be shown once. An earlier one keeps signing
    beside it for ROTATION_OVERLAP."""
    secret, now = SECRET_PREFIX + secrets.token_urlsafe(32), timezone.now()
    record = CallbackSecret.objects.filter(owner=owner).first()
    if record is None:
        CallbackSecret.objects.create(owner=owner, secret=secret, rotated_at=now)
        return secret
    record.previous_secret, record.previous_until = record.secret, now + ROTATION_OVERLAP
    record.secret, record.rotated_at = secret, now
    record.save(update_fields=["secret", "previous_secret", "previous_until", "rotated_at"])
    return secret
