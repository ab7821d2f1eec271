"""Only sessions the site issued count, under keys of their own; session and anonymous callers are
limited by address too; nothing of a session's upload is read before its CSRF token and its rate limit
are checked."""

import uuid

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client

from gateway.auth.callers import SESSION_OWNER_KEY
from tests.uploads import LargeUpload, png, post_streamed, submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_limits")]

CSRF = "a" * 32  # a token of the caller's own making: cookie and header agree, as Django checks
LARGE_UPLOAD_BYTES = 10 * 1024 * 1024  # within the one-file limit: only the checks refuse it


def made_up_browser() -> Client:
    """A script pretending to be a browser: a session cookie and a CSRF pair of its own making."""
    client = Client()
    client.cookies["sessionid"] = uuid.uuid4().hex
    client.cookies["csrftoken"] = CSRF
    return client


def site_issued_browser() -> Client:
    client = Client()
    client.get("/")  # the page issues the session
    return client


def test_a_made_up_session_cookie_creates_no_session(stub_broker):
    response = submit(made_up_browser(), headers={"X-CSRFToken": CSRF})
    assert response.status_code == 202  # anonymous: the embedded default allows it
    assert Session.objects.count() == 0
    assert response.cookies["sessionid"].value == ""  # the made-up cookie is cleared, not adopted


def test_an_api_call_without_cookies_is_answered_without_any(stub_broker):
    """Sessions, CSRF, users and messages are passed over for it: none of them sets a cookie."""
    response = submit(Client())
    assert response.status_code == 202
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_a_made_up_session_cookie_is_no_way_around_required_api_keys(settings, stub_broker):
    settings.API_KEYS_REQUIRED = True
    response = submit(made_up_browser(), headers={"X-CSRFToken": CSRF})
    assert response.status_code == 401
    assert Session.objects.count() == 0


def csrf_header(client: Client) -> dict:
    return {"X-CSRFToken": client.cookies["csrftoken"].value if "csrftoken" in client.cookies else CSRF}


def test_visiting_a_page_is_no_way_around_required_api_keys(settings, stub_broker):
    """`curl -c j /`, then a submit and a job list with `-b j` and the CSRF token: nothing but a sign-in."""
    settings.API_KEYS_REQUIRED = True
    browser = Client()

    home = browser.get("/")

    assert home.status_code == 302 and home["Location"] == "/accounts/login/?next=/"
    assert Session.objects.count() == 0
    assert submit(browser, headers=csrf_header(browser)).status_code == 401
    assert browser.get("/api/v1/jobs").status_code == 401


def test_a_session_issued_while_keys_were_optional_is_no_key_once_they_are_required(settings, stub_broker):
    browser = site_issued_browser()
    settings.API_KEYS_REQUIRED = True

    refused = submit(browser, headers=csrf_header(browser))

    assert refused.status_code == 401 and refused.json()["error"]["code"] == "authentication_required"
    assert browser.get("/api/v1/jobs").status_code == 401
    assert browser.get("/jobs/")["Location"] == "/accounts/login/?next=/jobs/"


def test_with_keys_required_a_signed_in_user_uses_the_pages_and_their_api_calls(settings, stub_broker):
    settings.API_KEYS_REQUIRED = True
    User.objects.create_user("ada", password="a long enough password")
    browser = Client()

    signed_in = browser.post(
        "/accounts/login/?next=/", {"username": "ada", "password": "a long enough password", "next": "/"}
    )
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    assert browser.get("/").status_code == 200
    job_id = submit(browser, headers=csrf_header(browser)).json()["job_id"]

    assert browser.get(f"/api/v1/jobs/{job_id}").status_code == 200
    assert Client().get(f"/api/v1/jobs/{job_id}").status_code == 401


def test_the_sign_in_page_refuses_a_wrong_password(settings, db):
    settings.API_KEYS_REQUIRED = True
    User.objects.create_user("ada", password="a long enough password")

    browser = Client()
    refused = browser.post("/accounts/login/", {"username": "ada", "password": "guess"})

    assert refused.status_code == 200 and "don't match an account" in refused.content.decode()
    assert browser.get("/").status_code == 302


def test_a_new_made_up_cookie_each_time_still_gets_429_after_the_limit(settings, stub_broker):
    settings.RATE_LIMIT_SUBMIT = "3/d"
    answers = [submit(made_up_browser(), headers={"X-CSRFToken": CSRF}) for _ in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]


def test_sessions_the_site_issued_are_limited_by_address_too(settings, stub_broker):
    settings.RATE_LIMIT_SUBMIT = "3/d"
    browsers = [site_issued_browser() for _ in range(5)]
    answers = [
        submit(browser, headers={"X-CSRFToken": browser.cookies["csrftoken"].value}) for browser in browsers
    ]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]


def test_a_site_issued_session_owns_its_jobs(stub_broker):
    browser = site_issued_browser()
    job_id = submit(browser, headers={"X-CSRFToken": browser.cookies["csrftoken"].value}).json()["job_id"]
    assert browser.get(f"/api/v1/jobs/{job_id}").status_code == 200
    assert made_up_browser().get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_each_file_of_a_batch_counts_against_the_submit_limit(client, api_key, settings, stub_broker):
    settings.RATE_LIMIT_SUBMIT = "4/d"
    key = api_key("batcher")
    files = [png(f"{n}.png") for n in range(3)]
    first = client.post("/api/v1/jobs/batch", {"image": files, "service": "blur"}, headers=key)
    assert first.status_code == 202 and first["X-RateLimit-Remaining"] == "1"

    files = [png(f"{n}.png") for n in range(2)]
    refused = client.post("/api/v1/jobs/batch", {"image": files, "service": "blur"}, headers=key)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"


# --- Nothing read before the headers are checked -----------------------------------------------
def test_a_session_submission_failing_csrf_is_refused_before_its_body_is_read(stub_broker):
    """The CSRF check looked for a token in the body first: the whole upload was stored to disk."""
    browser = Client(enforce_csrf_checks=True)
    browser.get("/")
    for headers in ({}, {"X-CSRFToken": "b" * 32}):
        body = LargeUpload(LARGE_UPLOAD_BYTES)
        response = post_streamed(browser, "/api/v1/process/grayscale", body, headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
        assert body.bytes_read == 0


def test_a_session_over_its_submit_limit_is_refused_before_its_body_is_read(settings, stub_broker):
    settings.RATE_LIMIT_SUBMIT = "1/d"
    browser = Client(enforce_csrf_checks=True)
    browser.get("/")
    token = {"X-CSRFToken": browser.cookies["csrftoken"].value}
    assert submit(browser, headers=token).status_code == 202
    body = LargeUpload(LARGE_UPLOAD_BYTES)

    refused = post_streamed(browser, "/api/v1/process/grayscale", body, token)

    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert body.bytes_read == 0


# --- Session keys ------------------------------------------------------------------------------
def session_key(client: Client) -> str:
    return client.cookies["sessionid"].value


def test_issuing_a_session_gives_it_a_new_key_and_the_old_one_opens_nothing(stub_broker):
    """A session stored without an owner (an admin's sign-in, or one planted in the browser by
    someone who knows its key) becomes an owner's under a key nobody knew."""
    browser = Client()
    browser.session.save()  # a stored session, no owner yet
    known = session_key(browser)

    browser.get("/")  # the page issues the session
    job_id = submit(browser, headers={"X-CSRFToken": browser.cookies["csrftoken"].value}).json()["job_id"]

    assert session_key(browser) != known
    assert not Session.objects.filter(session_key=known).exists()
    planted = Client()
    planted.cookies["sessionid"] = known
    assert planted.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert browser.get(f"/api/v1/jobs/{job_id}").status_code == 200


def test_signing_in_gives_the_session_a_new_key_and_keeps_its_jobs(stub_broker):
    User.objects.create_user("admin", password="pw", is_staff=True)
    browser = site_issued_browser()
    before = session_key(browser)
    owner = SessionStore(before)[SESSION_OWNER_KEY]

    signed_in = browser.post("/admin/login/", {"username": "admin", "password": "pw"})

    assert signed_in.status_code == 302
    assert session_key(browser) != before
    assert not Session.objects.filter(session_key=before).exists()
    assert SessionStore(session_key(browser))[SESSION_OWNER_KEY] == owner
