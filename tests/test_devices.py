"""Device and bandwidth detection: the User-Agent, Save-Data, client hints and the visitor's choices."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from gateway.pages import devices

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 14_0 like Mac OS X)"
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def request(query: str = "", user_agent: str = DESKTOP_CHROME, cookies: dict | None = None, **headers):
    made = RequestFactory().get(f"/{query}", headers={"User-Agent": user_agent, **headers})
    made.COOKIES.update(cookies or {})
    return made


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        (IPHONE, "mobile"),
        (ANDROID_PHONE, "mobile"),
        (IPAD, "tablet"),
        (DESKTOP_CHROME, "desktop"),
        (GOOGLEBOT, "bot"),
        ("curl/8.5.0", "desktop"),
        ("", "desktop"),
    ],
)
def test_the_device_class_comes_from_the_user_agent(user_agent, device):
    assert devices.device_class(user_agent) == device


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Save-Data": "on"}, "save-data"),
        ({"ECT": "slow-2g"}, "ect"),
        ({"ECT": "2g"}, "ect"),
        ({"ECT": "3g"}, "ect"),
        ({"Downlink": "1.2"}, "downlink"),
        ({"RTT": "1500"}, "rtt"),
    ],
)
def test_a_slow_connection_is_low_bandwidth(headers, reason):
    profile = devices.detect(request(**headers))
    assert (profile.bandwidth, profile.bandwidth_reason) == ("low", reason)
    assert profile.ui_mode == "lite"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"ECT": "4g"},
        {"Downlink": "10"},
        {"RTT": "50"},
        {"Save-Data": "off"},
        {"Downlink": "fast", "RTT": "?"},
    ],
)
def test_a_fast_or_unknown_connection_is_high_bandwidth(headers):
    assert devices.detect(request(**headers)).bandwidth == "high"


def test_the_bandwidth_query_beats_the_headers_and_the_cookie():
    assert devices.detect(request("?bandwidth=high", **{"Save-Data": "on"})).bandwidth == "high"
    remembered = {devices.BANDWIDTH_COOKIE: "high"}
    assert devices.detect(request("?bandwidth=low", cookies=remembered)).bandwidth == "low"


def test_a_remembered_bandwidth_choice_beats_save_data_until_auto_forgets_it():
    remembered = {devices.BANDWIDTH_COOKIE: "high"}
    assert devices.detect(request(cookies=remembered, **{"Save-Data": "on"})).bandwidth == "high"
    assert (
        devices.detect(request("?bandwidth=auto", cookies=remembered, **{"Save-Data": "on"})).bandwidth
        == "low"
    )


@pytest.mark.parametrize(
    ("user_agent", "headers", "ui"),
    [
        (IPHONE, {}, "mobile"),
        (IPAD, {}, "desktop"),
        (DESKTOP_CHROME, {}, "desktop"),
        (GOOGLEBOT, {}, "lite"),
        (IPHONE, {"Save-Data": "on"}, "lite"),
    ],
)
def test_the_ui_follows_the_device_and_bandwidth(user_agent, headers, ui):
    assert devices.detect(request(user_agent=user_agent, **headers)).ui_mode == ui


def test_a_ui_choice_beats_detection_and_unknown_choices_are_ignored():
    assert devices.detect(request("?ui=desktop", user_agent=IPHONE)).ui_mode == "desktop"
    assert devices.detect(request(cookies={devices.UI_COOKIE: "lite"})).ui_mode == "lite"
    assert devices.detect(request("?ui=fancy", user_agent=IPHONE)).ui_mode == "mobile"
    assert devices.detect(request(cookies={devices.UI_COOKIE: "<script>"})).ui_mode == "desktop"


def test_adapting_a_response_remembers_choices_asks_for_hints_and_varies():
    response = devices.adapt(request("?ui=mobile&bandwidth=low"), HttpResponse())

    assert response.cookies[devices.UI_COOKIE].value == "mobile"
    assert response.cookies[devices.BANDWIDTH_COOKIE].value == "low"
    assert response.cookies[devices.UI_COOKIE]["samesite"] == "Lax"
    assert response["Accept-CH"] == "ECT, Downlink, RTT, Save-Data"
    assert response["Vary"] == "User-Agent, Save-Data, ECT, Downlink, RTT, Cookie"


def test_auto_forgets_a_remembered_choice():
    response = devices.adapt(request("?ui=auto"), HttpResponse())
    assert response.cookies[devices.UI_COOKIE]["max-age"] == 0


def test_a_phone_gets_one_upload_at_a_time_slow_polling_and_no_extras():
    config = devices.frontend_config(devices.detect(request(user_agent=IPHONE)))
    assert {
        key: config[key] for key in ("ui_mode", "max_concurrent_uploads", "polling_interval", "features")
    } == {
        "ui_mode": "mobile",
        "max_concurrent_uploads": 1,
        "polling_interval": 5000,
        "features": {"batch_processing": False, "real_time_preview": False, "advanced_metrics": False},
    }


def test_the_desktop_ui_on_a_slow_connection_polls_slowly_and_skips_previews():
    config = devices.frontend_config(devices.detect(request("?ui=desktop&bandwidth=low")))
    assert config["ui_mode"] == "desktop"
    assert config["polling_interval"] >= devices.LOW_BANDWIDTH_POLLING_MS
    assert config["features"]["real_time_preview"] is False
    assert config["features"]["batch_processing"] is True
    assert config["compress_responses"] is True
