"""The SQL statements a job costs the gateway: a submission and a read of the job, counted.

The numbers are what the code reaches now, as upper bounds: a change that adds a statement to every
job shows here first. A new job's row is written stamped as published (no UPDATE after the broker
confirms); an API key is read once per few seconds per process (gateway.auth.callers.live_key).
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests import images
from tests.uploads import submit

pytestmark = pytest.mark.django_db(transaction=True)


def statements(request) -> list[str]:
    """The SQL `request()` runs, BEGIN and COMMIT included; asserts it was answered with a 2xx."""
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert 200 <= response.status_code < 300, response.content
    return [query["sql"].split(" ", 1)[0] for query in captured.captured_queries]


def at_most(found: list[str], reached: list[str]) -> bool:
    """No more statements than `reached` (what the code reaches now): fewer is progress."""
    return len(found) <= len(reached)


def image(n: int) -> SimpleUploadedFile:
    """A distinct small JPEG: no earlier job's result can be reused for it."""
    return SimpleUploadedFile("photo.jpg", images.jpeg_bytes(images.gradient(32 + n, 24)))


def browser() -> tuple[Client, dict]:
    """A browser whose session the site issued, and the header its submissions carry."""
    client = Client()
    client.get("/")
    return client, {"X-CSRFToken": client.cookies["csrftoken"].value}


@pytest.fixture
def key_client(api_key) -> tuple[Client, dict]:
    """A client presenting an API key that has been used before (its last use is recorded)."""
    client, headers = Client(), api_key("counted")
    submit(client, headers=headers, image=image(99))
    return client, headers


def test_an_anonymous_submission_reads_for_an_earlier_result_and_inserts_its_job(stub_broker):
    assert at_most(statements(lambda: submit(Client(), image=image(1))), ["SELECT", "INSERT"])


def test_without_result_reuse_a_submission_is_one_insert(settings, stub_broker):
    settings.RESULT_REUSE = False
    assert at_most(statements(lambda: submit(Client(), image=image(1))), ["INSERT"])


def test_an_api_key_read_moments_ago_costs_no_statement(key_client, stub_broker):
    client, headers = key_client
    assert at_most(statements(lambda: submit(client, headers=headers, image=image(1))), ["SELECT", "INSERT"])


def test_a_session_costs_its_one_read(stub_broker):
    client, headers = browser()
    submit(client, headers=headers, image=image(99))
    assert at_most(
        statements(lambda: submit(client, headers=headers, image=image(1))), ["SELECT", "SELECT", "INSERT"]
    )


def test_an_idempotency_key_costs_its_record_and_the_job_ids_written_to_it(key_client, stub_broker):
    client, headers = key_client
    keyed = {**headers, "Idempotency-Key": "counted-1"}
    assert at_most(
        statements(lambda: submit(client, headers=keyed, image=image(1))),
        ["INSERT", "SELECT", "INSERT", "UPDATE"],
    )
    assert at_most(
        statements(lambda: submit(client, headers=keyed, image=image(1))), ["INSERT", "SELECT", "SELECT"]
    )


def test_reading_a_job_is_one_select(key_client, stub_broker):
    client, headers = key_client
    job_id = submit(client, headers=headers, image=image(1)).json()["job_id"]
    assert at_most(statements(lambda: client.get(f"/api/v1/jobs/{job_id}", headers=headers)), ["SELECT"])


def test_a_session_reads_a_job_in_two_selects(stub_broker):
    client, headers = browser()
    job_id = submit(client, headers=headers, image=image(1)).json()["job_id"]
    assert at_most(statements(lambda: client.get(f"/api/v1/jobs/{job_id}")), ["SELECT", "SELECT"])
