"""Batches, the job list, cancel, idempotency and result reuse."""

import re
from collections import Counter

import dramatiq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from processing.errors import Cancelled
from processing.imaging import formats
from processing.imaging.operations import Operation
from processing.jobs import lifecycle, submissions
from processing.models import Job
from tests import images
from tests.uploads import png, submit

pytestmark = pytest.mark.django_db(transaction=True)


# --- POST /api/v1/jobs/batch ---


def test_a_batch_makes_a_job_per_image_and_all_complete(client, run_jobs):
    files = [png(f"{n}.png", images.gradient(20 + n, 10)) for n in range(3)]
    response = client.post("/api/v1/jobs/batch", {"image": files, "service": "resize", "width": "10"})
    assert response.status_code == 202
    created = response.json()["jobs"]
    assert len(created) == 3 and all(job["status"] == "queued" for job in created)
    run_jobs()
    for job in created:
        assert client.get(job["job_url"]).json()["status"] == "completed"


def test_one_bad_image_refuses_the_whole_batch(client, stub_broker):
    files = [png(), png("notes.png", None)]
    files[1] = type(files[0])("notes.png", b"not an image at all")
    response = client.post("/api/v1/jobs/batch", {"image": files, "service": "blur"})
    assert response.status_code == 415
    assert "notes.png" in response.json()["error"]["message"]
    assert Job.objects.count() == 0


def test_a_batch_needs_a_service_and_at_most_the_file_limit(client, settings, stub_broker):
    assert client.post("/api/v1/jobs/batch", {"image": [png()]}).json()["error"]["code"] == "missing_service"
    settings.MAX_BATCH_FILES = 2
    response = client.post("/api/v1/jobs/batch", {"image": [png(), png(), png()], "service": "blur"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_files"


# --- GET /api/v1/jobs ---


def test_the_list_is_newest_first_with_cursor_pages_and_filters(client, stub_broker):
    made = [submit(client, "blur" if n % 2 else "sobel").json()["job_id"] for n in range(5)]
    first = client.get("/api/v1/jobs?limit=2").json()
    second = client.get(f"/api/v1/jobs?limit=2&cursor={first['next_cursor']}").json()
    third = client.get(f"/api/v1/jobs?limit=2&cursor={second['next_cursor']}").json()
    listed = [job["job_id"] for page in (first, second, third) for job in page["jobs"]]
    assert listed == made[::-1]
    assert third["next_cursor"] is None

    blurs = client.get("/api/v1/jobs?service=blur").json()["jobs"]
    assert {job["job_id"] for job in blurs} == {made[1], made[3]}
    assert client.get("/api/v1/jobs?status=completed").json()["jobs"] == []
    assert client.get("/api/v1/jobs?status=nonsense").status_code == 422
    assert client.get("/api/v1/jobs?cursor=garbage").json()["error"]["code"] == "invalid_cursor"


# --- cancel ---


def test_a_cancelled_queued_job_never_runs(client, stub_broker):
    job_id = submit(client).json()["job_id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    worker = dramatiq.Worker(stub_broker, worker_timeout=100)  # only now does a worker get the message
    worker.start()
    stub_broker.join("images")
    worker.join()
    worker.stop()
    job = Job.objects.get(id=job_id)
    assert job.status == Job.CANCELLED and job.attempts == 0 and not job.output_key


def test_a_running_job_stops_at_its_next_checkpoint_and_leaves_no_output(client, stub_broker):
    job_id = submit(client).json()["job_id"]
    job = lifecycle.claim(job_id, "worker-1")  # a worker has started it
    assert client.delete(f"/api/v1/jobs/{job_id}/cancel").status_code == 200

    reporter = lifecycle.ProgressReporter(job, "worker-1", interval=0)
    with pytest.raises(Cancelled):
        reporter(1.0)  # the operation's next progress report
    assert lifecycle.complete(job, "worker-1", output_key="x") is False
    assert Job.objects.get(id=job_id).status == Job.CANCELLED


def test_cancelling_a_finished_job_is_a_conflict(client, run_jobs):
    job_id = submit(client).json()["job_id"]
    run_jobs()
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "already_finished",
        "message": "the job is already completed",
        "job_status": "completed",
    }


# --- Idempotency-Key ---


def test_the_same_idempotency_key_returns_the_same_job(client, stub_broker):
    headers = {"Idempotency-Key": "order-42"}
    first = submit(client, headers=headers)
    again = submit(client, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1
    assert stub_broker.queues["images"].qsize() == 1  # published once


def test_idempotency_keys_belong_to_their_owner(client, api_key, stub_broker):
    alice = submit(client, headers={**api_key("a"), "Idempotency-Key": "k"}).json()["job_id"]
    bob = submit(client, headers={**api_key("b"), "Idempotency-Key": "k"}).json()["job_id"]
    assert alice != bob


def test_a_failed_request_does_not_use_up_its_idempotency_key(client, stub_broker):
    headers = {"Idempotency-Key": "retry-me"}
    assert submit(client, headers=headers, threads=99).status_code == 422
    assert submit(client, headers=headers, threads=2).status_code == 202


def test_an_idempotency_key_reused_for_a_different_request_is_refused(client, stub_broker):
    headers = {"Idempotency-Key": "order-43"}
    first = submit(client, "blur", headers=headers, radius=2)
    assert first.status_code == 202

    other_parameters = submit(client, "blur", headers=headers, radius=3)
    other_service = submit(client, "sharpen", headers=headers)
    other_image = submit(client, "blur", headers=headers, image=png(image=images.gradient(20, 20)), radius=2)

    for refused in (other_parameters, other_service, other_image):
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "idempotency_mismatch"
    assert Job.objects.count() == 1
    assert submit(client, "blur", headers=headers, radius="2.0").json()["job_id"] == first.json()["job_id"]


def test_the_idempotency_key_is_checked_before_the_image_is_read(client, stub_broker):
    broken = SimpleUploadedFile("broken.png", b"not an image")
    too_long = submit(client, headers={"Idempotency-Key": "k" * 201}, image=broken)
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_idempotency_key"

    headers = {"Idempotency-Key": "order-45"}
    assert submit(client, headers=headers).status_code == 202
    reused = submit(client, headers=headers, image=SimpleUploadedFile("broken.png", b"not an image"))
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_mismatch"


def test_an_idempotent_submission_is_parsed_negotiated_and_probed_once(client, stub_broker, monkeypatch):
    calls = Counter()

    def counted(name, function):
        def count_and_call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return count_and_call

    monkeypatch.setattr(Operation, "parse", counted("parse", Operation.parse))
    monkeypatch.setattr(formats, "negotiated_format", counted("negotiate", formats.negotiated_format))
    monkeypatch.setattr(submissions, "probe", counted("probe", submissions.probe))
    headers = {"Idempotency-Key": "order-44", "Accept": "image/avif"}

    assert submit(client, "blur", headers=headers, format="auto").status_code == 202
    assert calls == {"parse": 1, "negotiate": 1, "probe": 1}

    calls.clear()
    assert submit(client, "blur", headers=headers, format="auto")["Idempotent-Replayed"] == "true"
    assert calls == {"parse": 1, "negotiate": 1}  # a replay reads no upload


# --- result reuse ---


def test_the_same_input_and_parameters_reuse_the_stored_result(client, run_jobs, settings):
    image = images.gradient(40, 30)
    first = submit(client, "sobel", image=png(image=image)).json()["job_id"]
    run_jobs()
    response = submit(client, "sobel", image=png(image=image))
    assert response.status_code == 202
    second = response.json()
    assert second["status"] == "completed"  # at once, no worker
    metrics = client.get(f"/api/v1/result/{second['job_id']}").json()
    assert metrics["cache_hit"] is True and metrics["metrics"]["reused_job_id"] == first
    original = b"".join(client.get(f"/api/v1/download/{first}").streaming_content)
    reused = b"".join(client.get(f"/api/v1/download/{second['job_id']}").streaming_content)
    assert reused == original

    assert submit(client, "sobel", image=png(image=image), quality=50).json()["status"] == "queued"
    settings.RESULT_REUSE = False
    assert submit(client, "sobel", image=png(image=image)).json()["status"] == "queued"


# --- GET /api/v1/result/{id} ---


def test_the_result_names_its_worker_to_staff_and_labels_it_for_its_owner(client, api_key, run_jobs):
    owner, staff = api_key("alice"), api_key("ops", staff=True)
    job_id = submit(client, headers=owner).json()["job_id"]
    run_jobs()
    worker = Job.objects.get(id=job_id).worker_id  # host:pid:thread

    assert client.get(f"/api/v1/result/{job_id}", headers=staff).json()["worker"] == worker
    label = client.get(f"/api/v1/result/{job_id}", headers=owner).json()["worker"]
    assert re.fullmatch(r"worker-[0-9a-f]{12}", label), label  # neither host nor pid
    assert client.get(f"/api/v1/result/{job_id}", headers=owner).json()["worker"] == label  # stable


# --- GET /api/v1/jobs/{id}?wait=N on the synchronous view alone (a WSGI server; see test_api_wait) ---


def test_a_finished_job_is_answered_at_once_even_when_asked_to_wait(client, run_jobs):
    job_id = submit(client).json()["job_id"]
    run_jobs()
    response = client.get(f"/api/v1/jobs/{job_id}?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "completed"


def test_a_queued_job_is_answered_at_once_as_it_is_by_a_view_that_never_waits(client, stub_broker):
    job_id = submit(client).json()["job_id"]
    response = client.get(f"/api/v1/jobs/{job_id}?wait=60")  # only LongPolls, on its event loop, waits
    assert response.status_code == 200 and response.json()["status"] == "queued"


def test_another_owner_uploading_the_same_image_gets_a_job_of_its_own(client, api_key, run_jobs):
    alice, bob = api_key("alice"), api_key("bob")
    image = images.gradient(40, 30)
    first = submit(client, "sobel", headers=alice, image=png(image=image)).json()["job_id"]
    run_jobs()

    second = submit(client, "sobel", headers=bob, image=png(image=image)).json()
    assert second["status"] == "queued"  # processed for bob, not copied from alice's job
    run_jobs()
    result = client.get(f"/api/v1/result/{second['job_id']}", headers=bob).json()
    assert result["cache_hit"] is False and first not in str(result)

    again = submit(client, "sobel", headers=alice, image=png(image=image)).json()
    assert again["status"] == "completed"  # alice's own result is still reused
