"""The API's one error shape: {"error": {"code": ..., "message": ...}} with the right status."""

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from pydantic import ValidationError

from processing.errors import (
    AssetLimitReached,
    AssetNotFound,
    AssetTooLarge,
    CallbackRefused,
    DependencyUnavailable,
    DomainError,
    EmptyImage,
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMismatch,
    ImageTooLarge,
    InvalidParameters,
    OutputTooLarge,
    StepRefused,
    UnknownOperation,
    UnknownPreset,
    UnprocessableImage,
    UnsupportedImage,
)


class ApiError(Exception):
    """An error a client caused or must know about; rendered as the standard JSON error."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None, **details: Any
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after
        self.details = details


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, **details: Any
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


# How long a client that met an unavailable dependency waits before trying again.
RETRY_AFTER_SECONDS = 5


def service_unavailable(dependency: str, retry_after: int = RETRY_AFTER_SECONDS) -> ApiError:
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


def server_error(request: HttpRequest) -> HttpResponse:
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


# --- Parameters that don't fit, from pydantic or from the domain ------------------------------


def invalid_parameters(problems: list[dict[str, Any]]) -> ApiError:
    """The 422 for parameter problems ({"field", "rule", "message"} each), summed up in its message."""
    summary = "; ".join(problem_summary(p["field"], p["message"]) for p in problems)
    return ApiError(422, "invalid_parameters", summary, fields=problems)


def problem_summary(subject: str | None, message: str) -> str:
    """A problem in one line, naming what it is about (a parameter, a file) when it is about one."""
    return f"{subject}: {message}" if subject else message


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """The 422 for pydantic's errors (a ValidationError's `errors()`)."""
    return invalid_parameters([describe_pydantic_error(error) for error in errors])


def describe_pydantic_error(error: Mapping[str, Any]) -> dict[str, Any]:
    field = ".".join(
        str(part) for part in error.get("loc", ()) if part not in ("body", "form", "query", "path")
    )
    return {"field": field or None, "rule": error.get("type"), "message": error.get("msg")}


# --- The domain's errors (processing.errors) ---------------------------------------------------

# The HTTP status of each domain error. A class not named has the status of its nearest base
# that is; every DomainError has one (tests/test_errors.py), so none silently becomes a 500.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    UnprocessableImage: 422,
    EmptyImage: 400,
    UnsupportedImage: 415,
    # 422 like any image that can't be processed: 413 is for a body over its byte limit, which the
    # client would shrink, where an image of too many pixels may be a few kilobytes.
    ImageTooLarge: 422,
    # An asset of more bytes than MAX_ASSET_BYTES: a body too large, where an image of too many pixels
    # (ImageTooLarge) is content Darkroom won't take.
    AssetTooLarge: 413,
    InvalidParameters: 422,
    UnknownOperation: 404,
    DependencyUnavailable: 503,
    IdempotencyKeyInvalid: 400,
    IdempotencyKeyInUse: 409,
    IdempotencyKeyMismatch: 422,
    AssetLimitReached: 409,
    # Whatever was wrong with a step (an unknown service among them), the recipe is what is refused.
    StepRefused: 422,
    UnknownPreset: 422,
    CallbackRefused: 422,
}


def status_of(error: type[DomainError]) -> int:
    """The status of a domain error class, found along its MRO; KeyError when DOMAIN_STATUS has none."""
    for cls in error.__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    raise KeyError(f"{error.__name__} has no HTTP status in DOMAIN_STATUS")


def from_domain(exc: DomainError) -> ApiError:
    """The answer to a domain error, the same from the API and from the pages."""
    if isinstance(exc, StepRefused):
        return from_step(exc)
    status = status_of(type(exc))
    retry_after = RETRY_AFTER_SECONDS if status == 503 else None
    return ApiError(status, exc.code, client_message(exc), retry_after=retry_after, **details_of(exc))


def from_step(exc: StepRefused) -> ApiError:
    """A step's refusal: its cause's answer, as a 422 whose message names the step ("steps[2] (crop):
    ...") and whose fields are the step's (steps[2].width)."""
    cause = exc.cause
    if isinstance(cause, ValidationError):
        answer = from_validation_errors(cause.errors(include_url=False))
    else:
        answer = from_domain(cause) if isinstance(cause, DomainError) else internal_error()
    fields = [
        {**problem, "field": f"{exc.path}.{problem['field']}" if problem["field"] else exc.path}
        for problem in answer.details.get("fields", [])
    ]
    details = {
        **answer.details,
        "fields": fields or [{"field": exc.path, "rule": answer.code, "message": answer.message}],
    }
    return ApiError(422, answer.code, f"{exc.step}: {answer.message}", **details)


def client_message(exc: DomainError) -> str:
    """The error's message, with what the client needs to find its way: the parameter or the file it
    is about, or where the services are listed."""
    if isinstance(exc, InvalidParameters):
        return problem_summary(exc.field, exc.message)
    if isinstance(exc, UnknownOperation):
        return f"{exc.message}; see /api/v1/services"
    return problem_summary(exc.filename, exc.message) if isinstance(exc, UnprocessableImage) else exc.message


def details_of(exc: DomainError) -> dict[str, Any]:
    """Parameters that don't fit, make too large a result or name an asset the caller has not, are
    named in `fields`, like any other 422 about parameters."""
    if isinstance(exc, InvalidParameters):
        return {"fields": [{"field": exc.field, "rule": "fits_image", "message": exc.message}]}
    if isinstance(exc, (AssetNotFound, CallbackRefused)):
        return {"fields": [{"field": exc.field, "rule": exc.code, "message": exc.message}]}
    if isinstance(exc, OutputTooLarge):
        problem = f"makes the result larger than {exc.limit}"
        return {
            "fields": [{"field": name, "rule": exc.limit.lower(), "message": problem} for name in exc.fields]
        }
    return {}
