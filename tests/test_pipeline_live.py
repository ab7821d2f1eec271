"""The whole pipeline as real processes: uvicorn, RabbitMQ, PostgreSQL, Redis and Dramatiq workers."""

import io
import json
import subprocess

import httpx
import pytest
from PIL import Image

from tests import images
from tests.frozen import submit_and_kill_mid_job
from tests.stack import LiveStack, rabbitmqctl

pytestmark = pytest.mark.services


def test_the_curl_example_works_as_written(live_stack, worker, tmp_path):
    (tmp_path / "test.jpg").write_bytes(images.jpeg_bytes(images.gradient(640, 480)))
    url = f"{live_stack.base_url}/api/v1/process/grayscale"
    command = f'curl -s -X POST {url} -F "image=@test.jpg" -F "threads=4" -F "runs=1"'
    answer = json.loads(
        subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, check=True).stdout
    )
    assert answer["status"] == "queued" and answer["request_id"] and answer["poll_url"]

    with live_stack.client() as client:
        status = {}
        live_stack.wait_until(
            lambda: status.update(client.get(answer["poll_url"]).json()) or status["status"] == "completed",
            timeout=60,
            what="the job to complete",
        )
        download = client.get(status["download_url"])
    assert download.status_code == 200
    result = Image.open(io.BytesIO(download.content))
    assert result.format == "JPEG" and result.mode == "L" and result.size == (640, 480)


def test_a_worker_killed_mid_job_leaves_it_to_another_which_completes_it_once(live_stack):
    live_stack.start_worker("first", threads=1)
    live_stack.start_worker("second", threads=1)
    try:
        upload = images.jpeg_bytes(images.gradient(3000, 2000), quality=80)
        job = submit_and_kill_mid_job(live_stack, upload, runs=10)

        done = live_stack.wait_for_status(job["job_id"], timeout=120)
        assert done["status"] == "completed", done["error"]
        assert live_stack.result(job["job_id"])["attempts"] == 2
        files = live_stack.result_files(job["job_id"])
        assert [f.name for f in files] == ["output.jpg"]
        assert Image.open(files[0]).size == (3000, 2000)
    finally:
        live_stack.stop("first")
        live_stack.stop("second")


def test_every_job_accepted_before_a_rabbitmq_restart_completes(private_rabbitmq, tmp_path):
    jpeg = images.jpeg_bytes(images.gradient(320, 240))
    with LiveStack(tmp_path) as stack:  # on the test's own RabbitMQ, which it restarts
        stack.start_server()
        accepted = [stack.submit("sobel", jpeg)["job_id"] for _ in range(5)]  # no worker yet: they wait

        for step in ("stop_app", "start_app", "await_startup"):
            rabbitmqctl(step)

        accepted.append(stack.submit("sobel", jpeg)["job_id"])  # the gateway reconnects by itself
        stack.start_worker("after-restart")
        finished = [stack.wait_for_status(job_id, timeout=90)["status"] for job_id in accepted]
    assert finished == ["completed"] * len(accepted)


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
@pytest.mark.parametrize("accepted", [False, True], ids=["rejected-over-limit", "accepted-with-raised-limit"])
def test_a_200_mb_upload_does_not_grow_the_server_by_its_size(live_stack, accepted, server, tmp_path):
    from tests.stack import LiveStack, bmp_upload_body, peak_rss_kib, serving_pid

    big = str(300 * 1024 * 1024)
    if accepted:
        limits = {"MAX_UPLOAD_BYTES": big, "MAX_REQUEST_BYTES": big, "MAX_IMAGE_PIXELS": "100000000"}
    elif server == "gunicorn":
        limits = {"MAX_REQUEST_BYTES": big}  # past the declared-length check: the upload handler must count
    else:
        limits = {}  # a chunked body: refused (411) before it is read, nothing spooled
    with LiveStack(tmp_path, **limits) as stack:
        pid = serving_pid(stack.start_server(kind=server))
        for _ in range(3):  # warm up: imports, database connection, thread pool
            stack.submit("grayscale", images.jpeg_bytes(images.gradient(64, 64)))
        before = peak_rss_kib(pid)

        boundary = "darkroom-memory-test"
        length, body = bmp_upload_body(boundary, megabytes=200)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if accepted or server == "gunicorn":
            headers["Content-Length"] = str(length)
        response = httpx.post(
            f"{stack.base_url}/api/v1/process/grayscale", content=body(), timeout=120, headers=headers
        )
        grown_mib = (peak_rss_kib(pid) - before) / 1024

        print(f"{server}, 200 MB upload {'accepted' if accepted else 'rejected'}: grew {grown_mib:+.1f} MiB")
        refused = 413 if server == "gunicorn" else 411  # over the limit, or sent without a length
        assert response.status_code == (202 if accepted else refused), response.text
        assert grown_mib <= 20, f"the server grew by {grown_mib:.1f} MiB"
