"""The database out of reach: every request gets a 503 the client can retry, never a 500.

The connection really fails (it is pointed at a port where nothing listens); `bench.chaos`
stops and starts the PostgreSQL server itself under load.
"""

import copy

import pytest
from django.db import connection
from django.test import Client

from tests import uploads
from tests.stack import refused_port

pytestmark = pytest.mark.django_db(transaction=True)
JOB_ID = "6f1c2c8e-6d2a-4c1e-9d6e-0d6c1f1f0a11"


@pytest.fixture
def database_unreachable():
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL (the SQLite test database can't go away)")
    saved = copy.deepcopy(connection.settings_dict)
    with refused_port() as port:
        reconnect(PORT=port)  # nothing listens there
        connection.settings_dict["OPTIONS"]["pool"]["timeout"] = 0.5  # fail sooner than in production
        yield
        reconnect(**saved)


def reconnect(**settings) -> None:
    """The next query opens a new pool with `settings`."""
    connection.close()
    connection.close_pool()
    connection.settings_dict.update(settings)


@pytest.fixture
def client():
    return Client(raise_request_exception=False)  # answer as the server would, handler500 included


def test_an_upload_while_the_database_is_down_gets_a_503_to_retry(client, database_unreachable):
    response = uploads.submit(client, "grayscale")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response["Retry-After"]) > 0


def test_reading_a_job_while_the_database_is_down_gets_a_503(client, database_unreachable):
    response = client.get(f"/api/v1/jobs/{JOB_ID}")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


def test_the_upload_form_while_the_database_is_down_says_so_with_a_503(client, database_unreachable):
    form = {"service": "grayscale", "image": uploads.png()}
    response = client.post("/upload", form, HTTP_ACCEPT="text/html")

    assert response.status_code == 503
    assert "database is unavailable" in response.content.decode()
    assert int(response["Retry-After"]) > 0
