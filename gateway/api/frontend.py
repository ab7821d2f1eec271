"""GET /api/v1/frontend/config: the UI settings for this device and connection."""

from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from gateway.api.schemas import ErrorOut
from gateway.pages import devices

router = Router(tags=["frontend"])


class Features(Schema):
    batch_processing: bool = Field(description="several files in one upload (POST /jobs/batch)")
    real_time_preview: bool = Field(description="before/after images in the live job list")
    advanced_metrics: bool = Field(description="queue wait and processing times per job")


class FrontendConfigOut(Schema):
    ui_mode: Literal["desktop", "mobile", "lite"]
    max_concurrent_uploads: int = Field(description="upload requests a client should have in flight at once")
    polling_interval: int = Field(description="milliseconds between polls when the WebSocket is unavailable")
    features: Features
    device: Literal["mobile", "tablet", "desktop", "bot"] = Field(description="from the User-Agent")
    bandwidth: Literal["low", "high"] = Field(description="from Save-Data, ECT/Downlink/RTT or ?bandwidth")
    compress_responses: bool = Field(description="pages are sent gzip-compressed")
    max_upload_bytes: int
    max_batch_files: int
    save_data_max_bytes: int | None = Field(
        description="the byte budget (max_bytes) the mobile and lite pages fill in for a visitor saving "
        "data (SAVE_DATA_MAX_BYTES); null for everyone else"
    )


class ConfigChoices(Schema):
    ui: Literal["desktop", "mobile", "lite", "auto"] | None = Field(
        None, description="use this UI instead of the detected one (remembered in a cookie; auto forgets)"
    )
    bandwidth: Literal["low", "high", "auto"] | None = Field(
        None, description="treat the connection as low or high bandwidth (remembered; auto forgets)"
    )


HINT_HEADERS = {
    "Save-Data": "on: the visitor asked to save data (low bandwidth)",
    "ECT": "effective connection type; slow-2g, 2g and 3g mean low bandwidth",
    "Downlink": "estimated Mbit/s; below 1.5 means low bandwidth",
    "RTT": "estimated round trip in ms; 1000 and above means low bandwidth",
}
HINTS_DOC = {
    "parameters": [
        {"in": "header", "name": name, "required": False, "schema": {"type": "string"}, "description": about}
        for name, about in HINT_HEADERS.items()
    ]
}


@router.get(
    "/frontend/config",
    response={200: FrontendConfigOut, 422: ErrorOut},
    auth=None,
    url_name="frontend_config",
    openapi_extra=HINTS_DOC,
)
def frontend_config(
    request: HttpRequest, response: HttpResponse, choices: Query[ConfigChoices]
) -> dict[str, Any]:
    """The UI for this User-Agent and connection: its mode, upload concurrency, polling interval, features.

    An iPhone gets `mobile` (one upload at a time, polling every 5 s, no extras); `?bandwidth=low`,
    `Save-Data: on` or slow client hints get `lite`.
    """
    # `choices` is here to be validated and documented; detection reads the same query string.
    devices.adapt(request, response)
    return devices.frontend_config(devices.detect(request))
