"""HTTP middleware: request ids, the request body limit, rate-limit headers, and Django's browser
middleware passed over where it has nothing to do."""

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.deprecation import MiddlewareMixin

from gateway.http.body_limits import body_limits
from gateway.http.errors import error_response
from gateway.live.asgi import App, Message, Receive, Scope, Send
from processing import logcontext

API_PREFIX = "/api/"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

GetResponse = Callable[[HttpRequest], HttpResponse]


class RequestIdMiddleware:
    """Takes X-Request-ID from the client (when sane) or makes one, and echoes it on the response."""

    def __init__(self, get_response: GetResponse):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id_given = bool(REQUEST_ID_PATTERN.match(given))
        request_id = given if request_id_given else str(uuid.uuid4())
        # Django's request takes attributes of ours; gateway.api.auth.CallerRequest declares them.
        request.request_id_given = request_id_given  # type: ignore[attr-defined]
        request.request_id = request_id  # type: ignore[attr-defined]
        with logcontext.bound(request=request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class ApiErrorsAsJson:
    """Every error under /api/ in the API's one shape: Django's own 404 page for a path no URL matches,
    and ninja's 405 for a method an endpoint doesn't take, are HTML or plain text; a client parsing
    JSON gets the same {"error": {"code", "message"}} as from any other error. The answer keeps the
    original's headers (Allow, CORS) and cookies."""

    def __init__(self, get_response: GetResponse):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code not in (404, 405) or not request.path_info.startswith(API_PREFIX):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response  # the API's own answer already
        if response.status_code == 404:
            answer = error_response(404, "not_found", f"no such endpoint: {request.path}; see /api/docs")
        else:
            allowed = response.get("Allow", "")
            message = f"{request.method} is not allowed here; allowed: {allowed}"
            answer = error_response(405, "method_not_allowed", message)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                answer[header] = value
        answer.cookies = response.cookies
        return answer


class RequestBodyLimit:
    """ASGI middleware: answer 413 once a request body passes its limit (`body_limit`), and hand the
    body on in pieces of up to BODY_PIECE bytes.

    An oversized upload is stopped at its declared length, or at the first piece past the
    limit, without reading the rest. The server receives a body in many small reads; the
    app (Django on its request threads: gateway.http.wsgi_threads) takes each piece with a
    hop from its thread to the event loop, so a few large pieces cost far less than many
    small ones, and still bound the memory an upload takes.
    """

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope["path"])
        if declared_length(scope) > limit:
            return await send_too_large(send, scope["path"])

        received, rejected = 0, False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await gathered(receive)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    await send_too_large(send, scope["path"])
                    return {"type": "http.disconnect"}  # the app abandons the request quietly
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


BODY_PIECE = 1024 * 1024


async def gathered(receive: Receive) -> Message:
    """The next message, with the body of following `http.request` messages joined to it, up to BODY_PIECE."""
    message = await receive()
    if message["type"] != "http.request" or not message.get("more_body"):
        return message
    pieces, size = [message.get("body", b"")], len(message.get("body", b""))
    while message.get("more_body") and size < BODY_PIECE:
        message = await receive()
        if message["type"] != "http.request":
            return message  # the client went away: say so
        pieces.append(message.get("body", b""))
        size += len(pieces[-1])
    return {"type": "http.request", "body": b"".join(pieces), "more_body": message.get("more_body", False)}


# Requests that may carry a batch of up to MAX_BATCH_FILES uploads: the API's and the upload form's.
BATCH_PATHS = ("/jobs/batch", "/upload")


def is_batch(path: str) -> bool:
    return path.rstrip("/").endswith(BATCH_PATHS)


def body_limit(path: str) -> int:
    """The largest body a request to `path` may carry (the rule nginx shares: gateway.http.body_limits)."""
    limits = body_limits(settings)
    return limits.batch if is_batch(path) else limits.one_file


def declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return length_of(value)
    return 0


def length_of(content_length: bytes | str | None) -> int:
    """A Content-Length header's value; 0 when there is none, or no number (the body is then counted)."""
    try:
        return int(content_length or 0)
    except ValueError:
        return 0


def too_large_body(path: str) -> dict[str, Any]:
    return {"error": {"code": "upload_too_large", "message": too_large_message(path)}}


def too_large_message(path: str) -> str:
    """What was refused and what fits, so a client knows how to split its request."""
    each = f"of up to {settings.MAX_UPLOAD_BYTES} bytes"
    fits = (
        f"a batch of up to {settings.MAX_BATCH_FILES} files {each} each"
        if is_batch(path)
        else f"one file {each}"
    )
    return f"the request body is larger than the limit of {body_limit(path)} bytes: {fits}"


async def send_too_large(send: Send, path: str) -> None:
    body = json.dumps(too_large_body(path)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DeclaredBodyLimitMiddleware:
    """Under WSGI the body is read lazily: refuse a declared oversized one before reading it."""

    def __init__(self, get_response: GetResponse):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if length_of(request.META.get("CONTENT_LENGTH")) > body_limit(request.path):
            return JsonResponse(too_large_body(request.path), status=413, headers={"Connection": "close"})
        return self.get_response(request)


class RateLimitHeadersMiddleware:
    """X-RateLimit-Limit/Remaining/Reset on every rate-limited API response."""

    def __init__(self, get_response: GetResponse):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        usage = getattr(request, "rate_limit", None)
        if usage:
            response["X-RateLimit-Limit"] = str(usage.limit)
            response["X-RateLimit-Remaining"] = str(usage.remaining)
            response["X-RateLimit-Reset"] = str(max(usage.reset, 0))
        return response


# --- Browser middleware, for requests that can use it ------------------------------------


def is_cookieless_api_call(request: HttpRequest) -> bool:
    """An API request without cookies: no session to load or save, so no user, no messages, and no
    CSRF check to make (the API checks a session's unsafe requests itself: gateway.auth.callers)."""
    return request.path_info.startswith(API_PREFIX) and "HTTP_COOKIE" not in request.META


class PassedOverForCookielessApiCalls(MiddlewareMixin):
    """Mixed into one of Django's browser middleware: it is passed over for an API request without
    cookies (is_cookieless_api_call), for which it would only make objects nothing reads."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if is_cookieless_api_call(request):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(PassedOverForCookielessApiCalls, SessionMiddleware):
    """Django's SessionMiddleware, passed over for a cookieless API call."""


class BrowserCsrfViewMiddleware(PassedOverForCookielessApiCalls, CsrfViewMiddleware):
    """Django's CsrfViewMiddleware, passed over for a cookieless API call."""


class BrowserAuthenticationMiddleware(PassedOverForCookielessApiCalls, AuthenticationMiddleware):
    """Django's AuthenticationMiddleware, passed over for a cookieless API call."""


class BrowserMessageMiddleware(PassedOverForCookielessApiCalls, MessageMiddleware):
    """Django's MessageMiddleware, passed over for a cookieless API call."""
