"""WebSocket routes, behind the origin check (sessions and keys are read by the sockets)."""

from collections.abc import Awaitable
from urllib.parse import urlsplit

from asgiref.sync import markcoroutinefunction
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path, re_path

from gateway.live import consumers

# django-stubs types path() for HTTP views only; these routes name sockets, called as application() says.
websocket_urlpatterns = [
    path("ws/jobs/", consumers.CallerJobsSocket, name="ws-jobs"),  # type: ignore[arg-type]
    re_path(r"^ws/jobs/(?P<job_id>[^/]+)/?$", consumers.JobSocket, name="ws-job"),  # type: ignore[arg-type]
]


@markcoroutinefunction  # an ASGI application all the same: what it returns is awaited
def application(
    scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> Awaitable[None]:
    """The origin check, then the socket its path names. A plain function that returns the
    socket's coroutine: an `async def` here, as any layer of ASGI middleware, would keep a frame
    in memory for as long as each socket is open.

    A browser's handshake from another origin is refused (HTTP 403): the Origin's scheme, host
    and port must be the server's own, as the handshake reached it, or one of
    CSRF_TRUSTED_ORIGINS. Browsers always send Origin, and a page of another site must not reach
    the WebSocket with the user's cookie (cross-site WebSocket hijacking); nor may a page served
    over plain HTTP, or on another port of the same host. Scripts and services send no Origin
    and authenticate with an API key, so a handshake without one goes through.
    """
    if not origin_allowed(scope):
        # types-channels asks for its own scope type: a WebSocketScope with keys of channels' own.
        return WebsocketDenier()(scope, receive, send)  # type: ignore[arg-type]
    path_in_site = scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/")
    for route in websocket_urlpatterns:
        match = route.pattern.match(path_in_site)
        if match is not None:
            # django-stubs types a route's callback as an HTTP view's, whatever it is.
            return route.callback(send).serve(scope, receive, **match[2])  # type: ignore[no-any-return]
    # The sockets take ASGI's scope and messages as plain dicts (gateway.live.asgi says why).
    return consumers.unknown_endpoint(scope, receive, send)  # type: ignore[arg-type]


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_allowed(scope: WebSocketScope) -> bool:
    headers = dict(scope.get("headers") or ())
    if b"origin" not in headers:
        return True
    origin = parse_origin(headers[b"origin"].decode("latin-1"))
    if origin is None:
        return False
    return origin == own_origin(scope, headers) or any(
        matches(origin, trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS
    )


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as https://example.com:8443; None when it isn't one."""
    parts = urlsplit(value.strip().lower())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def own_origin(scope: WebSocketScope, headers: dict[bytes, bytes]) -> tuple[str, str, int] | None:
    """The origin of our own pages, as this handshake reached the server (its Host, and HTTPS when
    the connection or, through SECURE_PROXY_SSL_HEADER, the proxy in front says so)."""
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return parse_origin(f"{'https' if is_secure(scope, headers) else 'http'}://{host}")


def is_secure(scope: WebSocketScope, headers: dict[bytes, bytes]) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    if not settings.SECURE_PROXY_SSL_HEADER:
        return False
    name, value = settings.SECURE_PROXY_SSL_HEADER
    header = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
    return headers.get(header, b"").decode("latin-1").split(",")[0].strip() == value


def matches(origin: tuple[str, str, int], trusted: str) -> bool:
    """Whether `origin` is the trusted origin (as in CSRF_TRUSTED_ORIGINS, where https://*.example.com
    stands for any subdomain)."""
    scheme, host, port = origin
    wildcard = "://*." in trusted
    allowed = parse_origin(trusted.replace("://*.", "://", 1))
    if allowed is None or (allowed[0], allowed[2]) != (scheme, port):
        return False
    return host.endswith("." + allowed[1]) if wildcard else host == allowed[1]
