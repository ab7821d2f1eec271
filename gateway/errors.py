"""The API's one error shape: {"error": {"code": ..., "message": ...}} with the right status."""

from django.http import JsonResponse


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
