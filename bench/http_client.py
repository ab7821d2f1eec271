"""The benchmarks' load client: HTTP/1.1 on kept-alive connections, request bodies encoded beforehand.

A load generator should cost next to nothing beside what it loads (wrk's aim): the benchmarks run the
stack and its client on the same cores, and every millisecond the client spends is one the stack does
not get, while the raw loop it is compared with runs with no client at all. So an upload is encoded
once, before the timed run, into the bytes of a multipart/form-data body (`form`), and a request only
sends bytes on a connection kept open from one request to the next and reads the answer (http.client;
bench.pipeline prints what the client costs per job). One Client per thread: it is not thread-safe.
"""

import http.client
import json
import secrets
import select
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 20
DEFAULT_HEADERS = {"Accept": "*/*", "User-Agent": "darkroom-bench"}
# What a connection the server has closed gives when it is written to or read from.
CLOSED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)  # RemoteDisconnected is a reset


class ClientError(Exception):
    """A request got no answer: the connection was refused, broken or timed out, or redirects looped."""


@dataclass(frozen=True)
class Body:
    """A request body, encoded once, and its Content-Type."""

    content: bytes
    content_type: str


def form(fields: Mapping[str, object], files: Mapping[str, tuple[str, bytes, str]]) -> Body:
    """multipart/form-data of `fields` (name: value, sent as its str) and `files` (name: (filename,
    bytes, content type)), fields first, as a browser or httpx sends them."""
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, content, content_type) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"; '
            f'filename="{quoted(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts += [head.encode(), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return Body(b"".join(parts), f"multipart/form-data; boundary={boundary}")


def quoted(name: str) -> str:
    """A name in a Content-Disposition's quotes, escaped as HTML's form encoding does."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(frozen=True)
class Response:
    """An answer read to its end; `url` is the one that answered (after any redirects)."""

    method: str
    url: str
    status_code: int
    headers: Message  # case-insensitive: headers.get("content-type", "")
    content: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """`with Client("http://127.0.0.1:8000", timeout=60) as client:` then client.get(path) and
    client.post(path, body); one connection per origin, kept alive from one request to the next.

    A connection the server has closed meanwhile (its keep-alive timeout) is opened again: found closed
    before a request, or, if it closes as the request goes out, the request is sent once more on a
    new connection (the server closed it without reading it). Any other failure is a ClientError."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connections: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def get(
        self,
        path: str,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        return self.request("GET", target, None, headers or {}, follow_redirects)

    def post(self, path: str, body: Body, headers: Mapping[str, str] | None = None) -> Response:
        return self.request(
            "POST", path, body.content, {**(headers or {}), "Content-Type": body.content_type}
        )

    def request(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str],
        follow_redirects: bool = False,
    ) -> Response:
        url = urljoin(self.base_url + "/", url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.send(method, url, content, headers)
            location = response.headers.get("location")
            if not follow_redirects or response.status_code not in REDIRECTS or location is None:
                return response
            url = urljoin(url, location)
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                # As browsers do: the next request is a GET, without the body.
                method, content = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        raise ClientError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def send(self, method: str, url: str, content: bytes | None, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(url)
        connection = self.connection(parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent_before = connection.sock is not None
        try:
            try:
                return self.exchange(connection, method, url, target, content, headers)
            except CLOSED:
                if not sent_before:
                    raise
                connection.close()
                return self.exchange(connection, method, url, target, content, headers)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()  # in an unknown state: the next request opens a new one
            raise ClientError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc

    def exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        url: str,
        target: str,
        content: bytes | None,
        headers: Mapping[str, str],
    ) -> Response:
        connection.request(method, target, content, {**DEFAULT_HEADERS, **headers})
        answer = connection.getresponse()
        return Response(method, url, answer.status, answer.headers, answer.read())

    def connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        """The kept-alive connection to this origin, new if there is none; one the server closed while
        it was idle is closed here too, and is opened again by the next request (http.client does)."""
        connection = self.connections.get((scheme, netloc))
        if connection is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            connection = self.connections[(scheme, netloc)] = kind(netloc, timeout=self.timeout)
        elif connection.sock is not None and closed_by_peer(connection.sock):
            connection.close()
        return connection

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def closed_by_peer(sock: Any) -> bool:
    """An idle kept-alive connection has nothing to read: if it is readable, the server closed it
    (or sent what no request asked for, which spoils it as much)."""
    poller = select.poll()  # not select.select: it fails on descriptors past 1,023
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
