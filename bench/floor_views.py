"""Bare views for the floor under a submission (`make bench-api`'s upload figures): what a request
carrying the same upload costs the server when the view does nothing with it.

Served only by bench.floor_urls, under bench.floor_settings, which `make bench-api` gives its own
server for this measurement; nothing here is in the product's URLs. Importable without Django's
settings, so that the benchmark's client takes the paths from here.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

# Under /api/, as the API's submissions are: a cookieless API request passes over Django's browser
# middleware (gateway.http.middleware.PassedOverForCookielessApiCalls), so these views take the
# same way through the middleware stack as POST /api/v1/process/{service}. CSRF-exempt as ninja's
# views are (the CSRF middleware's view hook runs for every view; it passes over an exempt one).
PING_PATH = "/api/floor/ping"
UPLOAD_PATH = "/api/floor/upload"
UPLOAD_RESULT_PATH = "/api/floor/upload-result"

# About the size of a grayscale result of the benchmark's 1920x1080 photo: the answer of a job
# whose result comes back in the submission's own response.
RESULT_SIZE = 250_000
RESULT = bytes(RESULT_SIZE)


def ping(request: HttpRequest) -> JsonResponse:
    """No body, no work: what any request costs."""
    return JsonResponse({"ok": True})


@csrf_exempt
def upload(request: HttpRequest) -> JsonResponse:
    """The upload read through Django's multipart parser and the project's upload handler (to a
    temporary file, hashed), then a small JSON answer."""
    image = request.FILES["image"]
    return JsonResponse({"bytes": image.size})


@csrf_exempt
def upload_result(request: HttpRequest) -> HttpResponse:
    """The same read, answered with a result's worth of bytes."""
    image = request.FILES["image"]
    return HttpResponse(RESULT, content_type="image/jpeg", headers={"X-Upload-Bytes": str(image.size)})
