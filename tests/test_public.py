"""processing.jobs.public: a job's URLs, built from fixed paths, are each the route they name; its JSON
says which pool runs it."""

import uuid

import pytest
from django.urls import resolve

from gateway.live.routing import websocket_urlpatterns
from processing.jobs.public import job_json, job_urls
from processing.models import Job

JOB_ID = uuid.uuid4()


def test_each_http_url_of_a_job_resolves_to_its_view():
    urls = job_urls(JOB_ID)
    named = {key: resolve(urls[key]) for key in ("poll_url", "job_url", "download_url", "result_url")}

    assert {key: match.url_name for key, match in named.items()} == {
        "poll_url": "job_status",
        "job_url": "job_detail",
        "download_url": "job_download",
        "result_url": "job_result",
    }
    assert {str(match.kwargs["job_id"]) for match in named.values()} == {str(JOB_ID)}


def test_a_results_preview_url_is_the_preview_route():
    job = Job(id=JOB_ID, service="blur", status=Job.COMPLETED, output_key=f"results/{JOB_ID}/output.png")
    match = resolve(job_json(job)["result"]["preview_url"])
    assert (match.url_name, str(match.kwargs["job_id"])) == ("job_preview", str(JOB_ID))
    report = Job(id=JOB_ID, service="analyze", status=Job.COMPLETED, report={})
    assert job_json(report)["result"]["preview_url"] is None


def test_the_websocket_url_of_a_job_is_the_job_route():
    path = job_urls(JOB_ID)["ws_url"].lstrip("/")
    matches = [(p.name, p.pattern.match(path)) for p in websocket_urlpatterns if p.pattern.match(path)]

    assert matches[0][0] == "ws-job"
    assert matches[0][1][2]["job_id"] == str(JOB_ID)


def test_a_jobs_json_says_which_pool_runs_it():
    job = Job(service="blur", pool="canary", request_id="r")
    assert job_json(job)["pool"] == "canary"


@pytest.mark.django_db
def test_the_openapi_document_describes_a_jobs_pool(client):
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert schemas["JobOut"]["properties"]["pool"]["type"] == "string"
    assert "pool" in schemas["JobOut"]["required"]
