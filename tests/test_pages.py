"""The HTML pages: the UI each visitor gets, the lite UI's server-side upload and status pages
(which work without JavaScript), friendly errors, labels, and the lite page's weight."""

import gzip
import json
import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from gateway.pages import devices, views
from processing.imaging.operations import OPERATIONS
from processing.models import Job
from tests import images
from tests.factories import process_queued
from tests.uploads import LargeUpload, png, post_streamed, submit

pytestmark = pytest.mark.django_db(transaction=True)

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 14_0 like Mac OS X)"
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
# HTML and stylesheet, gzip-compressed as sent: what a first visit on a slow connection downloads. The
# form holds every operation's options, so that choosing one costs no second page (which did cost
# another 1.7 KB, and the file chosen). Ten operations' options, and JPEG XL and GIF among the formats.
LITE_PAGE_BUDGET_BYTES = 5 * 1024


class Controls(HTMLParser):
    """The form controls of a page, and the ids its labels point at."""

    def __init__(self, html: str):
        super().__init__()
        self.controls, self.labelled, self.scripts = [], set(), 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "label" and attrs.get("for"):
            self.labelled.add(attrs["for"])
        if tag == "script" and attrs.get("type") != "application/json":
            self.scripts += 1
        if tag in ("select", "textarea") or (
            tag == "input" and attrs.get("type") not in ("hidden", "submit")
        ):
            self.controls.append(attrs)

    def unlabelled(self) -> list[dict]:
        return [c for c in self.controls if c.get("id") not in self.labelled and not c.get("aria-label")]


def page(client, path: str = "/", user_agent: str = DESKTOP, **headers):
    return client.get(path, headers={"User-Agent": user_agent, **headers})


def ui_of(response) -> str:
    return re.search(r'<body data-ui="(\w+)"', response.content.decode()).group(1)


def embedded_config(response) -> dict:
    found = re.search(
        r'<script id="darkroom-config" type="application/json">(.*?)</script>', response.content.decode()
    )
    return json.loads(found.group(1))


def upload(client, service: str = "grayscale", image=None, **params):
    data = {"service": service, "image": image or png(), **{k: str(v) for k, v in params.items()}}
    return client.post("/upload", data)


# --- Which UI -----------------------------------------------------------------------------


def test_a_desktop_browser_gets_the_desktop_ui_with_a_session_and_a_csrf_token(client):
    response = page(client)

    assert response.status_code == 200
    assert ui_of(response) == "desktop"
    assert "sessionid" in response.cookies and "csrftoken" in response.cookies
    assert re.search(r'<meta name="csrf-token" content="\w+">', response.content.decode())
    assert embedded_config(response)["features"]["batch_processing"] is True
    assert 'multiple class="file-input"' in response.content.decode()


def test_an_iphone_gets_the_mobile_ui_with_camera_capture(client):
    response = page(client, user_agent=IPHONE)

    assert ui_of(response) == "mobile"
    html = response.content.decode()
    assert 'accept="image/*" capture="environment"' in html
    assert embedded_config(response)["polling_interval"] == 5000


@pytest.mark.parametrize(("path", "headers"), [("/", {"Save-Data": "on"}), ("/?bandwidth=low", {})])
def test_low_bandwidth_gets_the_lite_ui_without_scripts(client, path, headers):
    response = page(client, path, **headers)

    assert ui_of(response) == "lite"
    assert Controls(response.content.decode()).scripts == 0
    assert "<img" not in response.content.decode()


def test_a_crawler_gets_the_lite_page_and_no_session(client):
    response = page(
        client, user_agent="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    )
    assert ui_of(response) == "lite"
    assert "sessionid" not in response.cookies


def test_the_ui_switch_is_remembered_until_automatic(client):
    assert ui_of(page(client, "/?ui=lite")) == "lite"
    assert ui_of(page(client)) == "lite"
    chosen = page(client, "/?ui=mobile")
    assert ui_of(chosen) == "mobile"
    assert '<a href="/?ui=mobile" aria-current="page">' in chosen.content.decode()
    assert ui_of(page(client, "/?ui=auto")) == "desktop"


def test_the_home_page_varies_on_the_detection_headers_and_asks_for_hints(client):
    response = page(client)
    assert response["Accept-CH"] == "ECT, Downlink, RTT, Save-Data"
    varies = {name.strip().lower() for name in response["Vary"].split(",")}
    assert {"user-agent", "save-data", "ect", "downlink", "rtt", "cookie"} <= varies


# --- Accessibility and weight --------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/?ui=desktop", "/?ui=mobile", *[f"/?ui=lite&service={name}" for name in OPERATIONS]]
)
def test_every_control_has_a_label(client, path):
    controls = Controls(page(client, path).content.decode())
    assert controls.controls
    assert controls.unlabelled() == []


def test_status_changes_are_announced_to_screen_readers(client):
    for ui in ("desktop", "mobile"):
        assert 'role="status" aria-live="polite"' in page(client, f"/?ui={ui}").content.decode()


def test_the_lite_page_is_compressed_and_small(client):
    response = page(client, "/", **{"Save-Data": "on", "Accept-Encoding": "gzip"})

    assert response["Content-Encoding"] == "gzip"
    stylesheet = re.search(
        r'href="/static/(css/lite\.[0-9a-f]+\.css)"', gzip.decompress(response.content).decode()
    )
    with staticfiles_storage.open(stylesheet.group(1) + ".gz") as compressed:  # whitenoise sends this one
        css_bytes = len(compressed.read())
    weight = len(response.content) + css_bytes
    print(f"lite page weight: {len(response.content)} B HTML + {css_bytes} B CSS = {weight} B (gzip)")
    assert weight < LITE_PAGE_BUDGET_BYTES


# --- The lite flow, without JavaScript -----------------------------------------------------------


def test_the_lite_form_uploads_and_its_status_page_refreshes_until_completed(client, stub_broker):
    page(client, "/?ui=lite")
    response = upload(client, threads=2)

    assert response.status_code == 303
    job = Job.objects.get()
    assert response["Location"] == f"/jobs/{job.id}/"
    waiting = client.get(response["Location"]).content.decode()
    assert '<meta http-equiv="refresh" content="1; url=?wait=2">' in waiting
    assert 'data-status="queued"' in waiting

    process_queued(stub_broker)
    done = client.get(response["Location"]).content.decode()
    assert 'data-status="completed"' in done
    assert "http-equiv" not in done
    assert f'href="/api/v1/download/{job.id}"' in done
    download = client.get(f"/api/v1/download/{job.id}")
    assert download.status_code == 200 and download["Content-Type"] == "image/png"


def test_the_lite_refresh_backs_off_to_the_lite_polling_interval(client, stub_broker):
    page(client)
    location = upload(client)["Location"]

    assert (
        '<meta http-equiv="refresh" content="4; url=?wait=8">'
        in client.get(f"{location}?wait=4").content.decode()
    )
    slowest = devices.POLLING_MS["lite"] // 1000
    capped = client.get(f"{location}?wait=999").content.decode()
    assert f'<meta http-equiv="refresh" content="{slowest}; url=?wait={slowest}">' in capped


def test_the_lite_form_holds_every_operations_options_with_the_chosen_one_selected(client):
    html = page(client, "/?ui=lite&service=rotate").content.decode()
    assert '<option value="rotate" selected>Rotate</option>' in html
    for name in OPERATIONS:
        fieldset = f'<fieldset class="svc" id="s-{name}">'  # the page's CSS shows the chosen one's
        assert (fieldset in html) == (name not in views.NOT_ON_THE_LITE_PAGE)
    assert 'name="rotate.angle" type="number"' in html and "Angle (required)" in html
    assert 'name="rotate.fill" type="color" value="#ffffff"' in html
    assert 'name="output.format"' in html and '<option value="png">PNG</option>' in html
    assert "Largest file size (bytes)" in html and "`" not in html
    # A benchmark's knobs wait behind "Advanced"; the upload hint names every format an upload may be in.
    advanced = html[html.index('id="s-grayscale"') : html.index('id="s-sobel"')]
    assert advanced.index("<summary>Advanced</summary>") < advanced.index('name="grayscale.threads"')
    assert "HEIC, AVIF or JPEG XL" in html


def test_the_lite_form_takes_the_chosen_operations_fields_and_the_output_options_it_uses(client, run_jobs):
    page(client, "/?ui=lite")
    fields = {
        "rotate.angle": "90",
        "crop.width": "5",  # another operation's: not rotate's
        "output.format": "jpeg",
        "output.quality": "70",
    }
    response = client.post(
        "/upload", {"service": "rotate", "image": png(image=images.gradient(40, 20)), **fields}
    )
    assert response.status_code == 303
    job = Job.objects.get()  # crop's width would be refused by rotate: it was left out
    assert (job.parameters["angle"], job.parameters["format"], job.parameters["quality"]) == (90, "jpeg", 70)
    run_jobs()
    job.refresh_from_db()
    assert (job.status, job.output_format, job.output_width, job.output_height) == (
        "completed",
        "jpeg",
        20,
        40,
    )

    # A report takes no output options: the form's are left out rather than refused.
    location = client.post("/upload", {"service": "analyze", "image": png(), "output.quality": "70"})[
        "Location"
    ]
    run_jobs()
    assert 'data-status="completed"' in client.get(location).content.decode()


def test_an_analyze_report_reads_as_words_on_the_status_page(client, run_jobs):
    page(client)
    location = upload(client, "analyze", image=png(image=images.two_colors(40, 10)))["Location"]
    run_jobs()

    html = client.get(location).content.decode()
    assert "<dt>Brightness</dt>" in html and "of 255" in html
    assert "#ff0000: 75%" in html and "#0000ff: 25%" in html


def test_several_files_from_a_form_go_to_the_job_list(client, run_jobs):
    page(client)
    files = [png(f"{n}.png", images.noise(16, 16, seed=n)) for n in range(3)]
    response = client.post("/upload", {"service": "sobel", "image": files})

    assert response.status_code == 303 and response["Location"] == "/jobs/"
    run_jobs()
    listing = client.get("/jobs/").content.decode()
    assert listing.count("Sobel of") == 3 and "http-equiv" not in listing


def test_someone_elses_job_status_page_is_not_found(client, stub_broker):
    page(client)
    location = upload(client)["Location"]

    stranger = Client()
    response = stranger.get(location)
    assert response.status_code == 404
    assert "There is no such job" in response.content.decode()


# --- Friendly errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({"image": SimpleUploadedFile("notes.txt", images.text_bytes())}, 415, "an image Darkroom can read"),
        ({"service": "grayscale", "quality": "7"}, 400, "Something is missing"),
        ({"service": "rotate"}, 422, "angle"),
        ({"service": "crop", "x": 0, "y": 0, "width": 999, "height": 5}, 422, "width"),
        ({"service": "sepia"}, 404, "no service named"),
    ],
)
def test_bad_uploads_get_a_readable_page_with_the_right_status(client, stub_broker, data, status, says):
    page(client)
    if status != 400:
        data = {"service": "grayscale", "image": png(), **data}
    response = client.post("/upload", data)

    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert says in response.content.decode()
    assert Job.objects.count() == 0


def test_an_upload_without_the_csrf_token_is_refused(stub_broker):
    browser = Client(enforce_csrf_checks=True)
    page(browser)
    assert upload(browser).status_code == 403
    assert Job.objects.count() == 0


LARGE_UPLOAD_BYTES = 10 * 1024 * 1024  # within the upload limit: only the checks refuse it

FORGERIES = {
    "without a CSRF cookie": ({}, True),  # a cross-site form: the SameSite cookie stays home
    "from another site's page": ({"Origin": "https://elsewhere.example"}, False),
    "with a token that does not match": ({"X-CSRFToken": "b" * 32}, False),
}


@pytest.mark.parametrize(("headers", "drop_cookie"), FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_upload_is_refused_before_its_body_is_read(stub_broker, headers, drop_cookie):
    """Django's CSRF check read the form first: every forged upload was stored to disk."""
    browser = Client(enforce_csrf_checks=True)
    page(browser)
    if drop_cookie:
        del browser.cookies["csrftoken"]
    body = LargeUpload(LARGE_UPLOAD_BYTES)

    response = post_streamed(browser, "/upload", body, headers)

    assert response.status_code == 403
    assert body.bytes_read == 0
    assert Job.objects.count() == 0


def test_form_uploads_share_the_api_rate_limit_and_are_refused_before_their_body_is_read(
    client, stub_broker, settings
):
    settings.RATE_LIMIT_SUBMIT = "1/d"
    page(client)
    assert upload(client).status_code == 303
    refused = upload(client)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    body = LargeUpload(LARGE_UPLOAD_BYTES)

    refused = post_streamed(client, "/upload", body)

    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many uploads" in refused.content.decode()
    assert body.bytes_read == 0


def test_a_form_with_its_token_in_the_body_alone_still_uploads(stub_broker):
    """The lite form works without JavaScript: its token comes in the body, not in a header."""
    browser = Client(enforce_csrf_checks=True)
    page(browser)
    form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value, "service": "grayscale"}
    assert browser.post("/upload", {**form, "image": png()}).status_code == 303
    assert Job.objects.count() == 1


def test_form_uploads_and_api_submissions_draw_on_one_counter(client, stub_broker, settings):
    settings.RATE_LIMIT_SUBMIT = "1/d"
    page(client)
    assert upload(client).status_code == 303

    refused = submit(Client(), "grayscale")  # anonymous: the same client address the form was charged to
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"


def test_a_form_upload_costs_one_submission_per_file(client, stub_broker, settings):
    settings.RATE_LIMIT_SUBMIT = "2/d"
    page(client)
    files = [png(f"{n}.png", image=images.noise(16, 16, seed=n)) for n in range(3)]

    refused = client.post("/upload", {"service": "grayscale", "image": files})

    assert refused.status_code == 429
    assert Job.objects.count() == 0


def test_a_too_large_upload_gets_a_page_even_with_the_csrf_check_on(settings, stub_broker):
    settings.MAX_UPLOAD_BYTES = 1000
    browser = Client(enforce_csrf_checks=True)
    page(browser)
    form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value, "service": "grayscale"}

    response = browser.post("/upload", {**form, "image": png(image=images.noise(64, 64))})

    assert response.status_code == 413
    assert "That upload is too large" in response.content.decode()
    assert Job.objects.count() == 0


def test_the_lite_form_offers_the_presets_and_a_chosen_one_replaces_the_operation(client, run_jobs):
    html = page(client, "/?ui=lite").content.decode()
    offered = re.search(r'<select id="preset" name="preset">(.*?)</select>', html, re.S)
    # Each choice's text is what it sends (no value attribute: the light page counts its bytes).
    assert offered and re.findall(r"<option>([\w-]+)", offered.group(1)) == ["avatar", "small", "web"]

    # The form sends its operation and options too, as it always does: the preset wins.
    fields = {"preset": "avatar", "service": "rotate", "rotate.angle": "90", "output.format": "png"}
    response = client.post("/upload", {"image": png(image=images.noise(400, 300, seed=7)), **fields})
    assert response.status_code == 303
    job = Job.objects.get()
    assert (job.preset, job.service) == ("avatar", "thumbnail")  # a recipe of one step is its service's job
    run_jobs()
    job.refresh_from_db()
    assert (job.status, job.output_format, job.output_width, job.output_height) == (
        "completed",
        "webp",
        256,
        256,
    )
    assert 'data-status="completed"' in client.get(response["Location"]).content.decode()


def test_the_lite_form_with_no_preset_chosen_runs_its_operation(client, stub_broker):
    page(client, "/?ui=lite")
    response = client.post(
        "/upload", {"preset": "", "service": "rotate", "rotate.angle": "90", "image": png()}
    )
    assert response.status_code == 303
    job = Job.objects.get()
    assert (job.service, job.preset, job.parameters["angle"]) == ("rotate", "", 90)
