"""The JSON API (v1): django-ninja routers, and every error rendered in the one shape."""

import logging

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import ValidationError as PydanticValidationError

from gateway.api import assets, frontend, jobs, presets, services, system
from gateway.api.auth import API_AUTH
from gateway.api.docs import OfflineSwagger
from gateway.http.errors import (
    DATABASE_OUTAGES,
    STORAGE_OUTAGES,
    ApiError,
    error_response,
    from_domain,
    from_validation_errors,
    internal_error,
    outage,
    render,
)
from gateway.http.uploads import UploadTooLarge
from processing.errors import DomainError

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Darkroom API",
    version="1",
    description="Upload an image, name an operation, get a job; watch it over WebSocket or poll it.",
    urls_namespace="api-1",
    auth=API_AUTH,
    docs_url="/docs",
    docs=OfflineSwagger(),
)
api.add_router("", services.router)
api.add_router("", presets.router)
api.add_router("", jobs.router)
api.add_router("", assets.router)
api.add_router("", system.router)
api.add_router("", frontend.router)


@api.exception_handler(ApiError)
def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return render(exc)


@api.exception_handler(DomainError)
def on_domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return render(from_domain(exc))


def on_outage(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.warning("%s %s: a dependency is unavailable: %r", request.method, request.path, exc)
    return render(outage(exc) or internal_error())


for _outage in (*DATABASE_OUTAGES, *STORAGE_OUTAGES):
    # ninja types a handler's exc as the exception or its class; it is always given the exception.
    api.add_exception_handler(_outage, on_outage)  # type: ignore[arg-type]


@api.exception_handler(UploadTooLarge)
def on_upload_too_large(request: HttpRequest, exc: UploadTooLarge) -> HttpResponse:
    return error_response(413, "upload_too_large", str(exc))


@api.exception_handler(PydanticValidationError)
def on_parameter_error(request: HttpRequest, exc: PydanticValidationError) -> HttpResponse:
    return render(from_validation_errors(exc.errors(include_url=False)))


@api.exception_handler(NinjaValidationError)
def on_request_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return render(from_validation_errors(exc.errors))


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "not_found", "not found")


@api.exception_handler(AuthenticationError)
def on_authentication_required(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(
        401,
        "authentication_required",
        "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    )


@api.exception_handler(Throttled)
def on_rate_limited(request: HttpRequest, exc: Throttled) -> HttpResponse:
    wait = int(exc.wait or 1)
    return error_response(429, "rate_limited", f"too many requests; try again in {wait}s", retry_after=wait)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(exc.status_code, "http_error", str(exc))


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    # A bug, not the client's fault: log it whole, and still answer in the API's shape.
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return render(internal_error())
