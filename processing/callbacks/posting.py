"""One POST of a callback, safe to aim anywhere a client asks: to the addresses the filter checked,
never a redirect, within short timeouts, reading a bounded answer.

The connection goes to an address `addresses.checked` returned, not to the name (which could
resolve elsewhere a moment later); the name is still what the Host header and TLS (SNI and the
certificate's check) use. A redirect is an answer like any other: it is not followed. Of the
answer only the status counts; at most MAX_ANSWER_BYTES of its body are read, and its first
characters kept to show in the admin.
"""

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from processing.callbacks import addresses
from processing.callbacks.targets import Target

MAX_ANSWER_BYTES = 64 * 1024
EXCERPT_CHARACTERS = 200
USER_AGENT = "Darkroom-Callbacks/1"


class Unreachable(Exception):
    """No answer: the name did not resolve, no address took the connection, TLS failed, or the
    answer did not come (whole) in time. Worth trying again later."""


@dataclass(frozen=True)
class Answer:
    status: int
    excerpt: str  # the body's first characters, for the admin
    retry_after: float | None = None  # seconds, when a Retry-After header gives them


def post(
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    allowed: Iterable[addresses.IPNetwork],
    timeout: float,
) -> Answer:
    """POST `body` to `target` and read the answer. Raises addresses.AddressRefused when the host
    resolves to an address callbacks may not reach, Unreachable when there is no answer."""
    try:
        resolved = addresses.checked(target.host, target.port, allowed)
    except socket.gaierror as exc:
        raise Unreachable(f"{target.host} did not resolve: {exc.strerror or exc}") from None
    sock = connect(resolved, timeout)
    # The whole exchange within three timeouts: a receiver that answers a byte at a time, each just
    # within `timeout`, must not hold a worker thread for longer.
    watchdog = Watchdog(sock, 3 * timeout)
    try:
        if target.tls:  # SNI and the certificate's check by the name, on the checked address
            sock = watchdog.sock = tls_context().wrap_socket(sock, server_hostname=target.host)
        return exchange(target, sock, body, headers, timeout)
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.fired:
            raise Unreachable(f"no whole answer within {3 * timeout:g}s") from None
        raise Unreachable(describe(exc)) from None
    finally:
        watchdog.cancel()
        sock.close()


def connect(resolved: list[addresses.Resolved], timeout: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that takes one."""
    failures = []
    for each in resolved:
        sock = socket.socket(each.family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(each.sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            failures.append(f"{each.address}: {describe(exc)}")
    raise Unreachable("could not connect: " + "; ".join(failures))


def exchange(
    target: Target, sock: socket.socket, body: bytes, headers: Mapping[str, str], timeout: float
) -> Answer:
    # HTTPSConnection for its Host header (no :443), on the socket already wrapped.
    kind = http.client.HTTPSConnection if target.tls else http.client.HTTPConnection
    connection = kind(target.host, target.port, timeout=timeout)
    connection.sock = sock  # connected already, to the checked address: http.client only talks on it
    sent = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Connection": "close",
        **headers,
    }
    connection.request("POST", target.path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read(MAX_ANSWER_BYTES)
    excerpt = data[:EXCERPT_CHARACTERS].decode("utf-8", "replace")
    return Answer(response.status, excerpt, seconds(response.getheader("Retry-After")))


def seconds(retry_after: str | None) -> float | None:
    """A Retry-After header's delay in seconds; None for none, or for a date (not worth the parsing)."""
    if retry_after is None or not retry_after.strip().isdigit():
        return None
    return float(retry_after.strip())


def tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, the certificate checked against the URL's host."""
    return ssl.create_default_context()


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {getattr(exc, 'verify_message', None) or exc}"
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


class Watchdog:
    """Shuts the socket down after `seconds`, which ends any read waiting on it."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.fired = False
        self.sock = sock
        self.timer = threading.Timer(seconds, self.fire)
        self.timer.daemon = True
        self.timer.start()

    def fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):  # closed already
            self.sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self.timer.cancel()
