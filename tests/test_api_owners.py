"""Owners only: a job is visible to the API key or browser session that made it, and to staff."""

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from gateway.models import ApiKey
from processing.models import Job, find_job
from processing.owners import Owner
from tests.uploads import submit

pytestmark = pytest.mark.django_db(transaction=True)

READS = ("jobs/{id}", "status/{id}", "result/{id}", "download/{id}")


def test_another_keys_job_is_not_found_on_every_endpoint(client, api_key, run_jobs):
    alice, bob = api_key("alice"), api_key("bob")
    job_id = submit(client, headers=alice).json()["job_id"]
    run_jobs()

    for path in READS:
        assert client.get(f"/api/v1/{path.format(id=job_id)}", headers=alice).status_code == 200
        response = client.get(f"/api/v1/{path.format(id=job_id)}", headers=bob)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get("/api/v1/jobs", headers=bob).json()["jobs"] == []
    assert [j["job_id"] for j in client.get("/api/v1/jobs", headers=alice).json()["jobs"]] == [job_id]


def test_a_key_works_as_a_bearer_token_too(client, api_key, stub_broker):
    key = api_key()["X-API-Key"]
    job_id = submit(client, headers={"Authorization": f"Bearer {key}"}).json()["job_id"]
    assert client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key}).status_code == 200


def browser(**options):
    """A test client holding a session cookie and a CSRF token, as a browser on our pages would."""
    client = Client(**options)
    client.session.save()  # the test client sets the session cookie
    client.get("/admin/login/")  # sets the CSRF cookie
    return client


def test_a_browser_session_sees_its_own_jobs_only(client, stub_broker):
    first, second = browser(), browser()
    token = first.cookies["csrftoken"].value
    response = submit(first, headers={"X-CSRFToken": token})
    assert response.status_code == 202
    job_id = response.json()["job_id"]

    assert first.get(f"/api/v1/jobs/{job_id}").status_code == 200
    assert second.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404  # no session: anonymous


def test_a_session_post_needs_the_csrf_token_and_an_api_key_does_not(client, api_key, stub_broker):
    strict = browser(enforce_csrf_checks=True)
    response = submit(strict)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert submit(strict, headers={"X-CSRFToken": strict.cookies["csrftoken"].value}).status_code == 202
    assert submit(Client(enforce_csrf_checks=True), headers=api_key()).status_code == 202


def test_staff_see_every_job(client, api_key, stub_broker):
    job_id = submit(client, headers=api_key("alice")).json()["job_id"]
    staff_key = api_key("ops", staff=True)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=staff_key).status_code == 200

    User.objects.create_user("admin", password="pw", is_staff=True)
    client.login(username="admin", password="pw")
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 200


def test_an_unknown_key_is_401_not_anonymous(client, db):
    for headers in (
        {"X-API-Key": "dk_nope_nope"},
        {"Authorization": "Bearer dk_abc_def"},
        {"X-API-Key": "x"},
    ):
        response = client.get("/api/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working(client, api_key, db):
    headers = api_key("leaver")
    ApiKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert client.get("/api/v1/jobs", headers=headers).status_code == 401


def test_when_keys_are_required_anonymous_callers_get_401(client, api_key, settings, stub_broker):
    settings.API_KEYS_REQUIRED = True
    response = submit(client)
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_required"
    assert submit(client, headers=api_key()).status_code == 202
    assert client.get("/api/v1/services").status_code == 200  # the catalogue stays public


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash(client, capsys, db):
    call_command("create_api_key", "ci-robot", "--staff")
    printed = capsys.readouterr().out.strip()
    stored = ApiKey.objects.get(name="ci-robot")
    assert stored.is_staff
    secret = printed.split("_", 2)[2]  # dk_<prefix>_<secret>; the secret may itself hold "_"
    assert secret not in stored.secret_hash  # the secret itself is nowhere in the row
    assert client.get("/api/v1/files/stats", headers={"X-API-Key": printed}).status_code == 200


def test_the_job_its_owner_reads_has_every_field_as_stored(client, api_key, run_jobs):
    alice = api_key("alice")
    job_id = submit(client, headers=alice, format="auto").json()["job_id"]
    run_jobs()
    stored = Job.objects.get(id=job_id)
    assert stored.status == Job.COMPLETED and stored.parameters and stored.metrics  # JSON, datetimes, all

    found = find_job(stored.id, stored.owner)

    columns = [field.attname for field in Job._meta.concrete_fields]
    assert {name: getattr(found, name) for name in columns} == {
        name: getattr(stored, name) for name in columns
    }
    assert find_job(stored.id, Owner.from_identity("anonymous")) is None  # anyone else finds nothing
