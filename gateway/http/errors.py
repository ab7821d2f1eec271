"""The API's one error shape: {"error": {"code": ..., "message": ...}} with the right status."""

import sys

from botocore.exceptions import BotoCoreError
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.html import escape

from processing.errors import (
    BrokerUnavailable,
    EmptyImage,
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMismatch,
    ImageTooLarge,
    OutputTooLarge,
    StorageUnavailable,
    UnknownService,
    UnprocessableImage,
    UnsupportedImage,
)


class ApiError(Exception):
    """An error a client caused or must know about; rendered as the standard JSON error."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None, **details):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after
        self.details = details


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, **details
) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message, **details}}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def render(error: ApiError) -> JsonResponse:
    return error_response(
        error.status, error.code, error.message, retry_after=error.retry_after, **error.details
    )


def not_found(what: str = "job") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def service_unavailable(dependency: str, retry_after: int = 5) -> ApiError:
    return ApiError(
        503,
        f"{dependency}_unavailable",
        f"the {dependency} is unavailable; try again shortly",
        retry_after=retry_after,
    )


# A database that can't be reached (stopped, restarting, connection lost): the client may retry.
DATABASE_OUTAGES = (OperationalError, InterfaceError)
# File storage that can't be reached where no code expected it (S3 down or hung, a full disk):
# the same, for the storage. The submission path names its own failures StorageUnavailable.
STORAGE_OUTAGES = (BotoCoreError, OSError)


def outage(exc: BaseException | None) -> ApiError | None:
    """The 503 for a dependency that failed, or None when `exc` is no outage."""
    if isinstance(exc, DATABASE_OUTAGES):
        return service_unavailable("database")
    if isinstance(exc, STORAGE_OUTAGES):
        return service_unavailable("storage")
    return None


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "something went wrong on our side; it has been logged")


def server_error(request):
    """Django's handler500, for what fails outside the API's own handlers (middleware, pages).

    A database or storage outage is a 503 that a client retries, not a 500. The answer is built without
    templates or the database, which may be what failed.
    """
    error = outage(sys.exc_info()[1]) or internal_error()
    if "text/html" not in request.headers.get("Accept", ""):
        return render(error)
    page = f"<!doctype html><title>Darkroom</title><h1>{escape(error.message)}</h1>"
    response = HttpResponse(page, status=error.status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


# The domain's errors (processing.errors) a request can cause, as the API answers them.
def from_domain(exc: Exception) -> ApiError:
    """The answer to a domain error; anything unlisted is a bug, and re-raised."""
    if isinstance(exc, UnknownService):
        return ApiError(404, "unknown_service", f"{exc}; see /api/v1/services")
    if isinstance(exc, UnprocessableImage):
        status = IMAGE_ERROR_STATUS.get(type(exc), 422)
        message = f"{exc.filename}: {exc.message}" if getattr(exc, "filename", None) else exc.message
        return ApiError(status, exc.code, message, **image_error_details(exc))
    if isinstance(exc, BrokerUnavailable):
        return service_unavailable("broker")
    if isinstance(exc, StorageUnavailable):
        return service_unavailable("storage")
    if isinstance(exc, IdempotencyKeyInvalid):
        return ApiError(400, "invalid_idempotency_key", str(exc))
    if isinstance(exc, IdempotencyKeyInUse):
        return ApiError(409, "idempotency_key_in_use", str(exc))
    if isinstance(exc, IdempotencyKeyMismatch):
        return ApiError(422, "idempotency_mismatch", str(exc))
    raise exc


def image_error_details(exc: UnprocessableImage) -> dict:
    """A too-large result names its parameters as `fields`, like any other 422 about parameters."""
    if not isinstance(exc, OutputTooLarge):
        return {}
    problem = "makes the result larger than MAX_OUTPUT_PIXELS"
    return {
        "fields": [{"field": name, "rule": "max_output_pixels", "message": problem} for name in exc.fields]
    }


IMAGE_ERROR_STATUS = {EmptyImage: 400, UnsupportedImage: 415, ImageTooLarge: 413}
DOMAIN_ERRORS = (
    UnknownService,
    UnprocessableImage,
    BrokerUnavailable,
    StorageUnavailable,
    IdempotencyKeyInvalid,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
)
