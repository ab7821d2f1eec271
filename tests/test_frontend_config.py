"""GET /api/v1/frontend/config: the UI settings for a device and connection."""

import pytest

from gateway.pages import devices

pytestmark = pytest.mark.django_db

URL = "/api/v1/frontend/config"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 14_0 like Mac OS X)"
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
NO_EXTRAS = {"batch_processing": False, "real_time_preview": False, "advanced_metrics": False}


def test_an_iphone_gets_the_mobile_config(client):
    response = client.get(URL, headers={"User-Agent": IPHONE})

    assert response.status_code == 200
    config = response.json()
    assert config["ui_mode"] == "mobile"
    assert config["max_concurrent_uploads"] == 1
    assert config["polling_interval"] == 5000
    assert config["features"] == NO_EXTRAS
    assert config["device"] == "mobile"


def test_bandwidth_low_gets_the_lite_config_with_compression(client):
    config = client.get(f"{URL}?bandwidth=low", headers={"User-Agent": DESKTOP}).json()

    assert config["ui_mode"] == "lite"
    assert config["bandwidth"] == "low"
    assert config["polling_interval"] > 5000
    assert config["features"] == NO_EXTRAS
    assert config["compress_responses"] is True


def test_a_desktop_gets_batches_previews_and_metrics(client):
    config = client.get(URL, headers={"User-Agent": DESKTOP}).json()

    assert config["ui_mode"] == "desktop"
    assert config["features"] == {
        "batch_processing": True,
        "real_time_preview": True,
        "advanced_metrics": True,
    }
    assert config["max_concurrent_uploads"] > 1
    assert config["polling_interval"] < 5000
    assert config["compress_responses"] is False


@pytest.mark.parametrize("hint", [{"Save-Data": "on"}, {"ECT": "2g"}, {"Downlink": "0.4"}, {"RTT": "2000"}])
def test_slow_connection_hints_get_the_lite_config(client, hint):
    assert client.get(URL, headers={"User-Agent": DESKTOP, **hint}).json()["ui_mode"] == "lite"


def test_the_bandwidth_choice_is_remembered_until_auto(client):
    first = client.get(f"{URL}?bandwidth=low", headers={"User-Agent": DESKTOP})
    assert first.cookies[devices.BANDWIDTH_COOKIE].value == "low"

    assert client.get(URL, headers={"User-Agent": DESKTOP}).json()["ui_mode"] == "lite"
    client.get(f"{URL}?bandwidth=auto")
    assert client.get(URL, headers={"User-Agent": DESKTOP}).json()["ui_mode"] == "desktop"


def test_it_asks_for_client_hints_and_varies_on_them(client):
    response = client.get(URL)

    assert response["Accept-CH"] == "ECT, Downlink, RTT, Save-Data"
    varies = {name.strip().lower() for name in response["Vary"].split(",")}
    assert {"user-agent", "save-data", "ect", "downlink", "rtt", "cookie"} <= varies


def test_it_needs_no_credentials_even_when_keys_are_required(client, settings):
    settings.API_KEYS_REQUIRED = True
    assert client.get(URL).status_code == 200


def test_an_unknown_choice_is_a_422_in_the_api_shape(client):
    response = client.get(f"{URL}?ui=fancy")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameters"


def test_the_openapi_document_describes_the_config(client):
    spec = client.get("/api/v1/openapi.json").json()
    operation = spec["paths"]["/api/v1/frontend/config"]["get"]

    schema_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    assert {"ui_mode", "max_concurrent_uploads", "polling_interval", "features"} <= set(schema["required"])
    parameters = {parameter["name"] for parameter in operation["parameters"]}
    assert {"ui", "bandwidth", "Save-Data", "ECT", "Downlink", "RTT"} <= parameters
    assert operation.get("security") in (None, [])
