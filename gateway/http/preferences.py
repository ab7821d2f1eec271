"""The `Prefer` request header (RFC 7240): what a client would like of a submission's answer.

Two preferences mean something here: `wait=N` (answer when the job ends, N seconds at most)
and `return=representation` (answer with the result itself, not the job's JSON). Any other
preference, or one whose value makes no sense, is ignored, as the RFC asks: a preference is
never an error. What was honoured is said in `Preference-Applied`; answers that a preference
can change carry `Vary: Prefer`.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.live.asgi import Scope

MAX_WAIT_SECONDS = 60  # a longer wait is honoured for this long (Preference-Applied says so); long polls' too

# A preference: a token, with an optional `=value` (a token or a quoted string), then `;` parameters.
PREFERENCE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("[^"]*"|[^,;\s]*))?\s*(?:;[^,]*)?')


@dataclass(frozen=True)
class Preferences:
    wait: float | None = None  # seconds, within 0 < wait <= MAX_WAIT_SECONDS
    representation: bool = False  # return=representation

    def applied(self, *, representation: bool) -> str:
        """Preference-Applied for an answer that waited, and that is the representation or not."""
        honoured = [f"wait={self.wait:g}"] if self.wait else []
        if representation:
            honoured.append("return=representation")
        return ", ".join(honoured)


def parse(values: Iterable[str]) -> Preferences:
    """The preferences of every Prefer header; the first occurrence of a preference counts (RFC 7240 §2)."""
    seen: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            match = PREFERENCE.fullmatch(item)
            if match:
                name, given = match.group(1).lower(), (match.group(2) or "").strip('"')
                seen.setdefault(name, given)
    return Preferences(
        wait=wait_seconds(seen.get("wait")), representation=seen.get("return") == "representation"
    )


def wait_seconds(given: str | None) -> float | None:
    """`wait`'s value as the seconds honoured; None when absent, not a number of seconds, or zero."""
    if given is None or not given.isdigit():
        return None
    return min(int(given), MAX_WAIT_SECONDS) or None


def of_scope(scope: Scope) -> Preferences:
    """The preferences of an ASGI request."""
    return parse(
        value.decode("latin-1") for name, value in scope.get("headers", []) if name.lower() == b"prefer"
    )
