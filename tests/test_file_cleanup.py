"""A job's files go with its row, however it is deleted; a scheduled pass removes expired files and
files whose row is gone."""

import os
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from processing import storage
from processing.jobs import cleanup, lease
from processing.models import Job
from processing.worker import actors
from tests.uploads import submit

pytestmark = pytest.mark.django_db(transaction=True)


def stored(job: Job) -> list[bool]:
    return [default_storage.exists(key) for key in (job.input_key, job.output_key) if key]


def test_deleting_a_job_row_deletes_its_files(client, run_jobs):
    job_id = submit(client, "blur").json()["job_id"]
    run_jobs()
    job = Job.objects.get(id=job_id)
    assert stored(job) == [True, True]

    Job.objects.filter(id=job_id).delete()  # no admin, no API: any delete path

    assert stored(job) == [False, False]


def test_a_worker_finishing_a_job_deleted_meanwhile_leaves_no_output(client, stub_broker, monkeypatch):
    job_id = submit(client, "blur").json()["job_id"]
    job = lease.claim(job_id, "worker-1")
    save_output = storage.save_output

    def save_then_lose_the_row(key, data):
        saved = save_output(key, data)
        Job.objects.filter(id=job_id).delete()  # the admin deletes it while the worker writes
        return saved

    monkeypatch.setattr(storage, "save_output", save_then_lose_the_row)
    actors.run(job, "worker-1")

    assert not default_storage.exists(f"results/{job_id}/output.png")


def orphan(folder: str, job_id: str, age: timedelta) -> str:
    key = default_storage.save(f"{folder}/{job_id}/output.png", ContentFile(b"left behind"))
    path = default_storage.path(key)
    stamp = (timezone.now() - age).timestamp()
    os.utime(path, (stamp, stamp))
    return key


def test_cleanup_removes_old_files_whose_job_is_gone_and_keeps_the_rest(client, run_jobs):
    kept_id = submit(client, "blur").json()["job_id"]
    run_jobs()
    kept = Job.objects.get(id=kept_id)
    gone = orphan("results", "0b6b7d3e-0000-4000-8000-000000000001", timedelta(hours=2))
    recent = orphan("uploads", "0b6b7d3e-0000-4000-8000-000000000002", timedelta(minutes=1))

    done = cleanup.clean_up()

    assert done["orphans_removed"] == 1
    assert not default_storage.exists(gone)
    assert default_storage.exists(recent)  # may be a submission whose row is about to commit
    assert stored(kept) == [True, True]


def test_the_cleanup_command_removes_expired_files(client, run_jobs, settings):
    settings.FILE_TTL_SECONDS = 60
    job_id = submit(client, "blur").json()["job_id"]
    run_jobs()
    Job.objects.filter(id=job_id).update(finished_at=timezone.now() - timedelta(minutes=5))
    job = Job.objects.get(id=job_id)

    call_command("cleanup_files")

    assert stored(job) == [False, False]
    assert Job.objects.get(id=job_id).files_removed_at is not None
