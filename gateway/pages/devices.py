"""Device adaptation: who is on the other end, and which UI and settings suit them.

The device class comes from the User-Agent; the bandwidth from `Save-Data`, the network
client hints (`ECT`, `Downlink`, `RTT`) or an explicit `?bandwidth=low|high` that a cookie
remembers. A `?ui=desktop|mobile|lite` choice (also remembered) beats both. Responses that
adapt ask for the hints with `Accept-CH` (browsers send them only when asked) and say what
they vary on, so that caches keep the variants apart.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpHeaders, HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from processing import storage
from processing.imaging import formats

DEVICES = ("mobile", "tablet", "desktop", "bot")
UI_MODES = ("desktop", "mobile", "lite")
BANDWIDTHS = ("low", "high")
AUTO = "auto"  # ?ui=auto or ?bandwidth=auto forgets a remembered choice

UI_COOKIE = "darkroom_ui"
BANDWIDTH_COOKIE = "darkroom_bandwidth"
CHOICE_MAX_AGE = 365 * 24 * 3600

ACCEPT_CH = "ECT, Downlink, RTT, Save-Data"
VARY_ON = ("User-Agent", "Save-Data", "ECT", "Downlink", "RTT", "Cookie")

# What counts as a slow connection. Chrome reports an effective type of 3g and below
# when pages take many seconds to load; below 1.5 Mbit/s a single photo takes longer to
# upload than the whole lite UI weighs; at a second's round trip every poll is slow.
SLOW_ECT = frozenset({"slow-2g", "2g", "3g"})
SLOW_DOWNLINK_MBPS = 1.5
SLOW_RTT_MS = 1000

POLLING_MS = {"desktop": 2000, "mobile": 5000, "lite": 10000}
LOW_BANDWIDTH_POLLING_MS = 10000
CONCURRENT_UPLOADS = {"desktop": 3, "mobile": 1, "lite": 1}


@dataclass(frozen=True)
class Profile:
    """What was detected about one request, and the UI it gets."""

    device: str  # one of DEVICES
    bandwidth: str  # one of BANDWIDTHS
    bandwidth_reason: str  # what decided it: "override", "save-data", "ect", "downlink", "rtt" or "default"
    ui_choice: str | None = None  # the visitor's explicit ?ui= (or remembered) choice

    @property
    def detected_ui(self) -> str:
        if self.bandwidth == "low" or self.device == "bot":
            return "lite"  # crawlers get the small server-rendered page too
        return "mobile" if self.device == "mobile" else "desktop"  # a tablet's screen fits the desktop UI

    @property
    def ui_mode(self) -> str:
        return self.ui_choice or self.detected_ui


@lru_cache(maxsize=1024)
def device_class(user_agent: str) -> str:
    """mobile, tablet, desktop or bot; anything unrecognised (curl, scripts) counts as a desktop."""
    # Imported on the first page, not with the URLs: it compiles its thousand patterns as it loads,
    # half a second of CPU that a gateway serving only the API would spend at every start.
    from user_agents import parse as parse_user_agent

    parsed = parse_user_agent(user_agent)
    if parsed.is_bot:
        return "bot"
    if parsed.is_tablet:
        return "tablet"
    if parsed.is_mobile:
        return "mobile"
    return "desktop"


def bandwidth_from_headers(headers: HttpHeaders) -> tuple[str, str]:
    """(bandwidth, reason) from Save-Data and the network client hints; high unless one says slow."""
    if headers.get("Save-Data", "").strip().lower() == "on":
        return "low", "save-data"
    if headers.get("ECT", "").strip().lower() in SLOW_ECT:
        return "low", "ect"
    downlink = number(headers.get("Downlink"))
    if downlink is not None and downlink < SLOW_DOWNLINK_MBPS:
        return "low", "downlink"
    rtt = number(headers.get("RTT"))
    if rtt is not None and rtt >= SLOW_RTT_MS:
        return "low", "rtt"
    return "high", "default"


def number(raw: str | None) -> float | None:
    """A client hint's number, or None when absent or malformed (hints are advice, never an error)."""
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def choice(request: HttpRequest, name: str, cookie: str, allowed: tuple[str, ...]) -> str | None:
    """The visitor's explicit choice: from the query string, else remembered in a cookie."""
    given = request.GET.get(name, "").lower()
    if given == AUTO:
        return None
    if given in allowed:
        return given
    remembered = request.COOKIES.get(cookie, "")
    return remembered if remembered in allowed else None


def detect(request: HttpRequest) -> Profile:
    device = device_class(request.headers.get("User-Agent", ""))
    override = choice(request, "bandwidth", BANDWIDTH_COOKIE, BANDWIDTHS)
    bandwidth, reason = (override, "override") if override else bandwidth_from_headers(request.headers)
    return Profile(device, bandwidth, reason, ui_choice=choice(request, "ui", UI_COOKIE, UI_MODES))


def frontend_config(profile: Profile) -> dict[str, Any]:
    """The UI's settings: what the JS client reads, and what GET /api/v1/frontend/config answers."""
    ui = profile.ui_mode
    rich = ui == "desktop"
    low = profile.bandwidth == "low"
    polling = POLLING_MS[ui]
    if low:
        polling = max(polling, LOW_BANDWIDTH_POLLING_MS)
    return {
        "ui_mode": ui,
        "max_concurrent_uploads": CONCURRENT_UPLOADS[ui],
        "polling_interval": polling,
        "features": {
            "batch_processing": rich,
            "real_time_preview": rich and not low,  # previews download every result image
            "advanced_metrics": rich,
        },
        "device": profile.device,
        "bandwidth": profile.bandwidth,
        "compress_responses": low or ui == "lite",
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "max_batch_files": settings.MAX_BATCH_FILES if rich else 1,
        "save_data_max_bytes": save_data_budget(profile),
        # The sizes of a result's previews (GET /api/v1/preview/{id}?size=), and formats' names.
        "preview_sizes": list(storage.PREVIEW_SIZES),
        "format_names": {name: formats.display_name(name) for name in formats.OUTPUT_FORMATS},
    }


def save_data_budget(profile: Profile) -> int | None:
    """The max_bytes the mobile and lite pages fill in for a visitor saving data; None: no budget."""
    if profile.ui_mode == "desktop" or profile.bandwidth != "low":
        return None
    return settings.SAVE_DATA_MAX_BYTES or None


def adapt(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Mark `response` as adapted to the request: remember explicit choices, ask for hints, vary."""
    for name, cookie, allowed in (("ui", UI_COOKIE, UI_MODES), ("bandwidth", BANDWIDTH_COOKIE, BANDWIDTHS)):
        remember(request, response, name, cookie, allowed)
    response["Accept-CH"] = ACCEPT_CH
    patch_vary_headers(response, VARY_ON)
    return response


def remember(
    request: HttpRequest, response: HttpResponse, name: str, cookie: str, allowed: tuple[str, ...]
) -> None:
    given = request.GET.get(name, "").lower()
    if given == AUTO:
        response.delete_cookie(cookie, samesite="Lax")
    elif given in allowed:
        response.set_cookie(cookie, given, max_age=CHOICE_MAX_AGE, samesite="Lax", httponly=True)
