"""Turning a request into a submission for processing.jobs.submissions: its uploads and parameters."""

import uuid
from typing import Any, cast

from django.http import HttpRequest, QueryDict

from gateway.auth.callers import Caller
from gateway.http.errors import ApiError
from gateway.http.negotiation import accepted_image_types
from processing.imaging.recipes import STEPS_SERVICE
from processing.jobs.submissions import Submission, Upload

# Form fields that are not operation parameters.
NON_PARAMETER_FIELDS = {"csrfmiddlewaretoken", "image", "service", "callback_url"}
# Form fields that make a submission a recipe (service "steps") when it names no service.
RECIPE_FIELDS = ("steps", "preset")


def uploads_from(request: HttpRequest, *, at_most: int) -> list[Upload]:
    uploads = request.FILES.getlist("image")
    if not uploads and not request.META.get("CONTENT_LENGTH"):
        # Django parses multipart bodies only when their length is declared.
        raise ApiError(411, "length_required", "send the upload with a Content-Length header (not chunked)")
    if not uploads:
        raise ApiError(
            400, "missing_image", "send the image as a multipart/form-data file field named 'image'"
        )
    if len(uploads) > at_most:
        raise ApiError(413, "too_many_files", f"send at most {at_most} image(s) in one request")
    # Hashed as they arrived, in memory or on disk: settings.FILE_UPLOAD_HANDLERS are gateway.http.uploads's.
    return cast(list[Upload], uploads)


def service_of(form: QueryDict) -> str | None:
    """The service a form names; a form with steps or a preset and no service is a recipe."""
    named = form.get("service")
    if named:
        return named
    return STEPS_SERVICE if any(form.get(field) for field in RECIPE_FIELDS) else None


def parameters_from(form: QueryDict) -> dict[str, Any]:
    return {key: value for key, value in form.items() if key not in NON_PARAMETER_FIELDS}


def submission_from(
    request: HttpRequest,
    caller: Caller,
    service: str,
    *,
    at_most: int,
    job_id: uuid.UUID | None = None,
    parameters: dict[str, Any] | None = None,
) -> Submission:
    """The request's submission; its parameters are the form's fields unless given (read from the form
    some other way: the lite page's, gateway.pages.views.form_parameters)."""
    return Submission(
        owner=caller.owner,
        request_id=request.request_id,  # type: ignore[attr-defined]  # gateway.http.middleware sets it
        service=service,
        raw_parameters=parameters_from(request.POST) if parameters is None else parameters,
        uploads=uploads_from(request, at_most=at_most),
        job_id=job_id,
        idempotency_key=request.headers.get("Idempotency-Key"),
        accepts=accepted_image_types(request),
        # An empty field, like none, means the caller's default (an API key's callback_url).
        callback_url=request.POST.get("callback_url", "").strip() or caller.callback_url,
    )
