"""callback_url on the submission endpoints: checked at submit (422s that say why, with no connection
attempted), an API key's default, and how the OpenAPI document describes it."""

import pytest

from gateway.models import ApiKey
from processing.callbacks import signing
from processing.models import Job
from tests.uploads import png, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hooks_key(api_key) -> tuple[dict, ApiKey]:
    """An API key with a callback secret: the headers that present it, and the key."""
    headers = api_key("hooks")
    key = ApiKey.objects.get(prefix=headers["X-API-Key"].split("_")[1])
    signing.issue(f"key:{key.pk}")
    return headers, key


def refusal(response) -> tuple[int, str, str]:
    error = response.json()["error"]
    assert error["fields"] == [{"field": "callback_url", "rule": error["code"], "message": error["message"]}]
    return response.status_code, error["code"], error["message"]


@pytest.mark.parametrize(
    "url, code, says",
    [
        ("ftp://hooks.example.com/x", "invalid_callback_url", "must be an http:// or https:// URL"),
        ("https://user:pw@hooks.example.com/", "invalid_callback_url", "user name or password"),
        ("http://10.0.0.1/hook", "callback_url_refused", "10.0.0.1 is a private address"),
        (
            "http://169.254.169.254/latest/",
            "callback_url_refused",
            "169.254.169.254 is a cloud metadata address",
        ),
        ("http://[fd00::1]/hook", "callback_url_refused", "fd00::1 is a private address"),
        ("http://127.0.0.1:9/hook", "callback_url_refused", "127.0.0.1 is a loopback address"),
        ("http://[::1]:9/hook", "callback_url_refused", "::1 is a loopback address"),
    ],
)
def test_a_callback_url_that_cant_be_used_is_a_422_saying_why(
    client, stub_broker, hooks_key, url, code, says
):
    headers, _ = hooks_key
    status, found_code, message = refusal(submit(client, headers=headers, callback_url=url))
    assert (status, found_code) == (422, code) and says in message
    assert not Job.objects.exists()


def test_the_operator_may_allow_an_address(client, settings, stub_broker, hooks_key):
    settings.CALLBACK_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    response = submit(client, headers=hooks_key[0], callback_url="http://10.0.0.1/hook")
    assert response.status_code == 202
    assert Job.objects.get(id=response.json()["job_id"]).callback_url == "http://10.0.0.1/hook"


def test_a_caller_without_a_callback_secret_is_told_how_to_get_one(client, api_key, stub_broker):
    for headers in ({}, api_key("no secret")):
        status, code, message = refusal(
            submit(client, headers=headers, callback_url="https://hooks.example.com/")
        )
        assert (status, code) == (422, "no_callback_secret") and "manage.py callback_secret" in message


def test_a_keys_default_callback_url_serves_the_submissions_that_name_none(client, stub_broker, hooks_key):
    headers, key = hooks_key
    key.callback_url = "https://hooks.example.com/default"
    key.save()
    named = submit(client, headers=headers, callback_url="https://hooks.example.com/this-one").json()
    unnamed = submit(client, headers=headers, image=png("other.png")).json()
    assert Job.objects.get(id=named["job_id"]).callback_url == "https://hooks.example.com/this-one"
    assert Job.objects.get(id=unnamed["job_id"]).callback_url == "https://hooks.example.com/default"
    assert "callback_url" not in named  # the job's JSON is the callback's body: no secret, no URL in it


def test_a_batch_and_the_shortcuts_take_a_callback_url_too(client, stub_broker, hooks_key):
    headers, _ = hooks_key
    url = "https://hooks.example.com/batch"
    batch = client.post(
        "/api/v1/jobs/batch",
        {"service": "grayscale", "image": [png("a.png"), png("b.png")], "callback_url": url},
        headers=headers,
    )
    resize = client.post(
        "/api/v1/resize", {"image": png(), "width": "8", "callback_url": url}, headers=headers
    )
    assert batch.status_code == resize.status_code == 202
    assert {job.callback_url for job in Job.objects.all()} == {url} and Job.objects.count() == 3


def test_an_idempotency_key_repeated_with_another_callback_url_is_a_mismatch(client, stub_broker, hooks_key):
    headers = {**hooks_key[0], "Idempotency-Key": "hooked-1"}
    first = submit(client, headers=headers, callback_url="https://hooks.example.com/a")
    again = submit(client, headers=headers, callback_url="https://hooks.example.com/a")
    other = submit(client, headers=headers, callback_url="https://hooks.example.com/b")
    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 422)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert other.json()["error"]["code"] == "idempotency_mismatch"


def test_the_openapi_document_describes_callback_url_and_the_callback(client):
    spec = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/process/{service}", "/api/v1/resize", "/api/v1/crop", "/api/v1/jobs/batch"):
        operation = spec["paths"][path]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["properties"]["callback_url"]["format"] == "uri"
        callback = operation["callbacks"]["jobEnded"]["{$request.body#/callback_url}"]["post"]
        assert callback["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/JobOut"
        }
        assert {header["name"] for header in callback["parameters"]} == {
            "Darkroom-Signature",
            "Darkroom-Event",
            "Darkroom-Event-Id",
            "Darkroom-Delivery-Attempt",
        }
    assert "JobOut" in spec["components"]["schemas"]
