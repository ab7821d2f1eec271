"""Django's CSRF check (CsrfViewMiddleware, unchanged) on a request's headers alone, so that a forged
unsafe request is refused before its body is read.

Django's own check reads `request.POST` first, to find a form's token there: for a multipart upload
that parses the whole body, every file written to disk, before the request can be refused. Here the
check runs on a copy of the request without its body, and so decides on the Origin, the Referer,
the CSRF cookie and the X-CSRFToken header.
"""

import io

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from ninja.utils import check_csrf


def refusal(request: HttpRequest, *, token_in_body: bool) -> HttpResponse | None:
    """Django's 403 when `request`'s headers fail the CSRF check, else None.

    With `token_in_body`, the token may come in the body (a page's form: its view checks it once the
    body is read), so a request without X-CSRFToken is checked as if it sent its cookie's own token:
    what the headers decide (Origin, Referer, a missing or malformed cookie) still refuses it. Without,
    the token must be in X-CSRFToken (the API's browser sessions)."""
    headers_only = without_body(request)
    cookie = headers_only.COOKIES.get(settings.CSRF_COOKIE_NAME)
    if token_in_body and settings.CSRF_HEADER_NAME not in headers_only.META and cookie is not None:
        headers_only.META[settings.CSRF_HEADER_NAME] = cookie
    return check_csrf(headers_only)


def without_body(request: HttpRequest) -> WSGIRequest:
    """A copy of `request` with its headers and an empty body: its POST reads nothing."""
    environ = {**request.META, "wsgi.input": io.BytesIO(), "CONTENT_LENGTH": "0", "CONTENT_TYPE": ""}
    copy = WSGIRequest(environ)
    # Django's test client turns the check off this way (Client(enforce_csrf_checks=True) keeps it on).
    copy._dont_enforce_csrf_checks = getattr(request, "_dont_enforce_csrf_checks", False)  # type: ignore[attr-defined]
    return copy
