"""What operators see and others don't: names of machines and processes.

A worker's id ("host:pid:thread") and a machine's host name tell an attacker where to aim. Operators
(gateway.auth.callers.is_operator) see them as they are; anyone else sees an opaque label in their
place: the same for the same name on every gateway (keyed by SECRET_KEY, so that a guessed host
name can't be checked against it), and telling two workers or machines apart, nothing more.
"""

from django.utils.crypto import salted_hmac

LABEL_DIGITS = 12


def opaque_label(kind: str, name: str) -> str:
    """`kind` followed by a keyed hash of `name`, e.g. "worker-3f9c0a1b2d4e"."""
    digest = salted_hmac("darkroom.disclosure.opaque_label", name).hexdigest()
    return f"{kind}-{digest[:LABEL_DIGITS]}"
