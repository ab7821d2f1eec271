"""Domain errors as HTTP answers: every one has a status, and the API and the pages give the same."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from gateway.http.errors import DOMAIN_STATUS, from_domain, status_of
from processing.errors import BrokerUnavailable, DomainError, EmptyImage, ImageTooLarge, UnprocessableImage
from processing.models import Job
from tests import images
from tests.uploads import png, submit


def subclasses(cls: type) -> list[type]:
    return [found for sub in cls.__subclasses__() for found in (sub, *subclasses(sub))]


@pytest.mark.parametrize("error", subclasses(DomainError), ids=lambda cls: cls.__name__)
def test_every_domain_error_has_an_http_status_so_none_becomes_a_500(error):
    assert 400 <= status_of(error) < 600


def test_the_base_has_no_status_of_its_own_so_a_new_error_must_be_given_one():
    assert DomainError not in DOMAIN_STATUS
    with pytest.raises(KeyError):
        status_of(type("NewError", (DomainError,), {}))


def test_a_subclass_has_its_nearest_listed_base_s_status():
    too_large = type("HugeImage", (ImageTooLarge,), {})
    assert status_of(too_large) == status_of(ImageTooLarge) == 422
    assert status_of(type("OddImage", (UnprocessableImage,), {})) == 422


def test_an_unavailable_broker_is_a_503_to_retry_that_keeps_its_cause_from_the_client():
    answer = from_domain(BrokerUnavailable("no confirmation within 5s"))

    assert (answer.status, answer.code, answer.retry_after) == (503, "broker_unavailable", 5)
    assert answer.message == "the broker is unavailable; try again shortly"


def test_an_image_error_names_the_file_it_is_about():
    error = EmptyImage()
    error.filename = "holiday.png"

    assert from_domain(error).message == "holiday.png: the uploaded file is empty"


# --- The API and the upload form answer alike ---------------------------------------------------


def text_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("notes.txt", images.text_bytes())


def empty_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("empty.png", b"")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("service", "image", "params", "code"),
    [
        ("grayscale", text_file, {}, "unsupported_image"),
        ("grayscale", empty_file, {}, "empty_image"),
        ("sepia", png, {}, "unknown_service"),
        ("crop", png, {"x": "0", "y": "0", "width": "999", "height": "5"}, "invalid_parameters"),
        ("resize", png, {"width": "10000", "height": "10000", "fit": "fill"}, "output_too_large"),
    ],
    ids=["unsupported", "empty", "unknown-service", "crop-outside", "output-too-large"],
)
def test_the_api_and_the_upload_form_answer_a_domain_error_alike(stub_broker, service, image, params, code):
    api = submit(Client(), service, image=image(), **params)
    browser = Client()
    browser.get("/")
    form = browser.post("/upload", {"service": service, "image": image(), **params})

    error = api.json()["error"]
    shown = form.context["error"]
    assert form.status_code == api.status_code >= 400
    assert (shown.code, shown.message) == (error["code"], error["message"])
    assert error["code"] == code
    assert shown.details.get("fields") == error.get("fields")
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("data", "title"),
    [
        (images.png_header_bytes(30000, 30000), "That image has too many pixels"),
        (images.png_with_a_broken_header_bytes(), "That image is damaged"),
        (images.bmp_holding_bytes(images.png_bytes()), "Darkroom can&#x27;t read that kind of image"),
    ],
    ids=["too-large", "damaged", "variant"],
)
def test_the_upload_form_titles_an_image_it_cannot_process_by_what_is_wrong(stub_broker, data, title):
    browser = Client()
    browser.get("/")
    form = browser.post("/upload", {"service": "grayscale", "image": SimpleUploadedFile("up.png", data)})

    assert form.status_code == 422
    assert f"<h1>{title}</h1>" in form.content.decode()


# --- Every error under /api/ is JSON -------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_api_path_is_a_json_404_and_a_page_s_404_stays_a_page():
    client = Client()
    unknown = client.get("/api/v1/no-such-thing")

    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert "/api/v1/no-such-thing" in unknown.json()["error"]["message"]
    assert client.get("/api/nothing-here").json()["error"]["code"] == "not_found"
    assert not client.get("/no-such-page").get("Content-Type").startswith("application/json")


@pytest.mark.django_db
def test_a_method_an_endpoint_does_not_take_is_a_json_405_naming_those_it_does(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    response = Client().put("/api/v1/services", headers={"Origin": "https://app.example.com"})

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"
    assert "PUT" in response.json()["error"]["message"]
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"  # a page elsewhere reads it
