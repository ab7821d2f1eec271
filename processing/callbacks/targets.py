"""A callback's URL: read once at submit (a clear 422 when it can't be one) and again to send to it.

Only the URL's form is checked at submit: http or https, a host, no credentials, no fragment, at
most MAX_CALLBACK_URL_LENGTH characters. Its host's addresses are checked when the callback is
sent (processing.callbacks.addresses), except a host written as an address, refused at once.
"""

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from processing.callbacks import addresses
from processing.errors import CallbackRefused
from processing.models import MAX_CALLBACK_URL_LENGTH

SCHEMES = ("http", "https")
DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class Target:
    """Where a callback goes: `host` as written (an IPv6 address without brackets), the port, and the
    path with its query."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def address(self) -> addresses.IPAddress | None:
        """The host, when it is written as an address."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse(url: str) -> Target:
    """The target `url` names; CallbackRefused ("invalid_callback_url") saying what is wrong."""
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        raise invalid(f"callback_url is longer than {MAX_CALLBACK_URL_LENGTH} characters")
    if UNPRINTABLE.search(url):
        raise invalid("callback_url may not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(f"callback_url is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise invalid("callback_url must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise invalid("callback_url may not carry a user name or password: callbacks are signed instead")
    if parts.fragment or url.endswith("#"):
        raise invalid("callback_url may not have a #fragment: it is never sent")
    host = checked_host(parts.hostname or "")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)


def checked_host(host: str) -> str:
    """The host, lower-cased, if it is an IP address or a DNS name (IDNA-encoded)."""
    if not host:
        raise invalid("callback_url has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise invalid(f"callback_url's host {host!r} is not a valid name") from None
    labels = ascii_host.removesuffix(".").split(".")
    if len(ascii_host) > 253 or not all(DNS_LABEL.match(label) for label in labels):
        raise invalid(f"callback_url's host {host!r} is not a valid name")
    if labels[-1].isdigit():  # 10.1 or 1.2.3.999: meant as an address, and not a valid one
        raise invalid(f"callback_url's host {host!r} is not a valid address")
    return ascii_host


def check(url: str, allowed: list[addresses.IPNetwork]) -> Target:
    """`parse`, and a host written as an address checked by the address filter at once."""
    target = parse(url)
    address = target.address
    reason = None if address is None else addresses.refusal(address, allowed)
    if reason is not None:
        raise CallbackRefused("callback_url_refused", f"callback_url is refused: {reason}")
    return target


def invalid(message: str) -> CallbackRefused:
    return CallbackRefused("invalid_callback_url", message)
