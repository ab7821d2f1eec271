"""processing.jobs.public builds a job's URLs from fixed paths: each must be the route it names."""

import uuid

from django.urls import resolve

from gateway.live.routing import websocket_urlpatterns
from processing.jobs.public import job_urls

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


def test_the_websocket_url_of_a_job_is_the_job_route():
    path = job_urls(JOB_ID)["ws_url"].lstrip("/")
    matches = [(p.name, p.pattern.match(path)) for p in websocket_urlpatterns if p.pattern.match(path)]

    assert matches[0][0] == "ws-job"
    assert matches[0][1][2]["job_id"] == str(JOB_ID)
