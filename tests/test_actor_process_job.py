"""The process_job actor with Dramatiq's StubBroker and a real Worker."""

from datetime import timedelta

import dramatiq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from processing import events, storage
from processing.jobs import lifecycle, publishing
from processing.models import Job
from processing.worker.actors import MAX_LEASE_WAITS, process_job
from tests import images
from tests.factories import stored_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def make_job():
    def make(service="grayscale", data: bytes | None = None, **parameters) -> Job:
        return stored_job(service, data, parameters=parameters)

    return make


def hold(job: Job, worker: str, lease_seconds: float, **fields) -> None:
    """Make `worker` the job's holder, its lease running out in `lease_seconds` (negative: already out)."""
    Job.objects.filter(id=job.id).update(
        status=Job.PROCESSING,
        worker_id=worker,
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
        **fields,
    )


def result_files(job: Job):
    return storage.default_storage.listdir(f"results/{job.id}")[1]


def test_a_queued_job_completes_with_its_output_and_timings(make_job, run_jobs):
    job = make_job(runs=3)
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED and job.progress == 1.0
    assert job.attempts == 1 and job.worker_id
    assert job.output_key == f"results/{job.id}/output.png"
    assert (job.output_width, job.output_height) == (64, 48)
    assert len(job.metrics["run_ms"]) == 3
    assert {"decode_ms", "operation_ms", "encode_ms", "store_ms"} <= set(job.metrics)
    assert job.started_at <= job.finished_at and job.processing_ms > 0
    assert job.enqueued_at is not None


def test_a_duplicate_delivery_of_a_completed_job_changes_nothing(make_job, run_jobs):
    job = make_job()
    publishing.publish(job)
    run_jobs()
    job.refresh_from_db()
    before = (job.finished_at, job.attempts, job.output_sha256, job.worker_id)
    output_mtime = storage.default_storage.get_modified_time(job.output_key)

    process_job.send(str(job.id))  # the broker delivers it again
    run_jobs()

    job.refresh_from_db()
    assert (job.finished_at, job.attempts, job.output_sha256, job.worker_id) == before
    assert storage.default_storage.get_modified_time(job.output_key) == output_mtime
    assert result_files(job) == ["output.png"]


def test_a_job_whose_worker_died_is_taken_over_when_its_lease_runs_out(make_job, run_jobs):
    job = make_job()
    # What a SIGKILLed worker leaves behind: claimed, lease already run out.
    hold(job, "dead-host:1:thread", lease_seconds=-1, attempts=1, started_at=timezone.now())
    process_job.send(str(job.id))
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED
    assert job.attempts == 2 and job.worker_id != "dead-host:1:thread"
    assert result_files(job) == ["output.png"]


def test_a_message_for_a_job_held_by_a_live_worker_waits_for_the_lease(make_job, stub_broker):
    from processing.worker.actors import wait_for_lease_or_skip

    job = make_job()
    hold(job, "busy-host:1:thread", lease_seconds=5)
    with pytest.raises(dramatiq.Retry) as retry:
        wait_for_lease_or_skip(str(job.id))
    assert 4000 < retry.value.delay <= 5500  # looks again just after the lease ends
    job.refresh_from_db()
    assert job.status == Job.PROCESSING


def test_a_cancelled_job_never_runs(make_job, run_jobs):
    job = make_job()
    Job.objects.filter(id=job.id).update(status=Job.CANCELLED)
    process_job.send(str(job.id))
    run_jobs()
    job.refresh_from_db()
    assert job.status == Job.CANCELLED and job.attempts == 0
    assert not storage.default_storage.exists(f"results/{job.id}")


def test_a_transient_storage_error_is_retried_and_the_job_completes(make_job, run_jobs, monkeypatch):
    job = make_job()
    real_save = storage.save_output
    failures = iter([OSError("storage hiccup")])

    def flaky_save(key, data):
        for error in failures:
            raise error
        return real_save(key, data)

    monkeypatch.setattr(storage, "save_output", flaky_save)
    monkeypatch.setattr(process_job, "options", {**process_job.options, "min_backoff": 10, "max_backoff": 20})
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED
    assert job.attempts == 2


def test_when_retries_run_out_the_job_fails_with_a_reason_and_the_message_is_dead_lettered(
    make_job, run_jobs, stub_broker, monkeypatch, settings
):
    settings.JOB_MAX_RETRIES = 1
    job = make_job()

    def broken_storage(key, data):
        raise OSError("disk on fire")

    monkeypatch.setattr(storage, "save_output", broken_storage)
    monkeypatch.setattr(process_job, "options", {**process_job.options, "min_backoff": 10, "max_backoff": 20})
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert job.error_code == "processing_error"
    assert "disk on fire" in job.error_message
    assert len(stub_broker.dead_letters) == 1
    assert stub_broker.dead_letters[0].args == (str(job.id),)


def test_an_unprocessable_image_fails_at_once_without_retries(make_job, run_jobs, stub_broker):
    job = make_job(data=images.truncated_jpeg_bytes())
    publishing.publish(job)
    run_jobs()
    job.refresh_from_db()
    assert job.status == Job.FAILED and job.error_code == "corrupt_image"
    assert job.attempts == 1
    assert stub_broker.dead_letters == []  # a bad image is the job's end, not a broken message


def test_progress_reaches_subscribers_and_the_database(make_job, run_jobs, sent, monkeypatch):
    monkeypatch.setattr(lifecycle, "PROGRESS_WRITE_INTERVAL", 0)  # as for a job slower than the interval

    job = make_job(runs=2)
    publishing.publish(job)
    run_jobs()

    seen = [(event["type"], event["job"]["progress"]) for event in sent.events]
    assert seen[0][0] == "job.processing" and seen[-1][0] == "job.completed"
    assert ("job.progress", 1.0) in seen


def progress_of(sent) -> list[float]:
    return [event["job"]["progress"] for event in sent.events if event["type"] == "job.progress"]


def test_a_sharpen_to_png_reports_its_bands_and_its_encode_in_order(make_job, run_jobs, sent, monkeypatch):
    monkeypatch.setattr(lifecycle, "PROGRESS_WRITE_INTERVAL", 0)  # as for a job slower than the interval
    job = make_job("sharpen", format="png")  # 64 x 48: one band each, for the operation and the encode
    publishing.publish(job)
    run_jobs()

    reported = progress_of(sent)
    assert reported == sorted(reported) and reported[-1] == 1.0
    # The decode's end, the sharpen's, then the encode's: each stage moves the bar, none waits for the end.
    assert len([fraction for fraction in reported if 0 < fraction < 1]) >= 2
    assert [event["type"] for event in sent.events][-1] == "job.completed"


def test_a_multi_second_job_reports_progress_between_zero_and_one_as_it_goes(make_job, run_jobs, sent):
    # The throttle as deployed (one write per PROGRESS_WRITE_INTERVAL): 6 MP sharpened to a PNG is
    # seconds of work in some thirty steps (bands of the sharpen and of the encode), so a step
    # comes after the interval has passed and before the end, however fast the machine.
    photo = images.jpeg_bytes(images.photo(1000, 667).resize((3000, 2000)), quality=90)
    job = make_job("sharpen", data=photo, format="png")
    Job.objects.filter(id=job.id).update(input_format="jpeg", input_width=3000, input_height=2000)
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED and job.metrics["operation_ms"] + job.metrics["encode_ms"] > 500
    assert any(0 < fraction < 1 for fraction in progress_of(sent))


def refuse(*args, **kwargs):
    raise ConnectionError("channel layer down")


@pytest.mark.parametrize("broken", ["building", "sending"])
def test_an_event_that_cannot_be_built_or_sent_never_fails_the_job(
    make_job, run_jobs, sent, monkeypatch, broken
):
    if broken == "building":
        monkeypatch.setattr(events, "event_message", refuse)
    else:
        monkeypatch.setattr(sent, "send", refuse)

    job = make_job()
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED
    assert sent.events == []


def test_a_job_whose_worker_was_killed_at_every_attempt_fails_as_worker_lost(make_job, run_jobs, settings):
    job = make_job()
    # The last of its JOB_MAX_ATTEMPTS workers was killed mid-job; RabbitMQ delivers the message again.
    hold(job, "dead-host:1:thread", lease_seconds=-1, attempts=settings.JOB_MAX_ATTEMPTS)
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Job.FAILED, "worker_lost")
    assert job.attempts == settings.JOB_MAX_ATTEMPTS  # not started again
    assert not storage.default_storage.exists(f"results/{job.id}")

    publishing.publish(job)  # a stray duplicate changes nothing
    run_jobs()
    job.refresh_from_db()
    assert job.status == Job.FAILED and job.attempts == settings.JOB_MAX_ATTEMPTS


def test_a_job_with_attempts_left_is_taken_over_and_completes(make_job, run_jobs, settings):
    job = make_job()
    hold(job, "dead-host:1:thread", lease_seconds=-1, attempts=settings.JOB_MAX_ATTEMPTS - 1)
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert job.status == Job.COMPLETED and job.attempts == settings.JOB_MAX_ATTEMPTS


def test_a_duplicate_given_up_on_leaves_the_job_to_the_live_worker_holding_it(
    make_job, run_jobs, stub_broker
):
    job = make_job()
    hold(job, "busy-host:1:thread", lease_seconds=60)
    # A duplicate that has already waited out the lease as often as it may.
    process_job.send_with_options(args=(str(job.id),), retries=MAX_LEASE_WAITS)
    run_jobs()

    assert len(stub_broker.dead_letters) == 1
    job.refresh_from_db()
    assert (job.status, job.worker_id, job.error_code) == (Job.PROCESSING, "busy-host:1:thread", "")


def statements_of(job: Job) -> list[str]:
    """The SQL statements the worker issues to run `job`, in this thread, as a worker thread runs it."""
    with CaptureQueriesContext(connection) as database:
        process_job.fn(str(job.id))
    return [query["sql"].split(" ", 1)[0] for query in database.captured_queries]


def test_an_image_job_costs_the_worker_two_sql_statements(make_job):
    # The claim returns the row it claimed and the completion writes the result without reading it.
    assert statements_of(make_job()) == ["UPDATE", "UPDATE"]
    assert Job.objects.filter(status=Job.COMPLETED).count() == 1


def test_a_report_job_costs_the_worker_two_sql_statements(make_job):
    assert statements_of(make_job("analyze")) == ["UPDATE", "UPDATE"]


def test_a_job_that_fails_costs_the_worker_three_sql_statements(make_job):
    # The failure is announced with the row read back: a rare path, kept simple.
    job = make_job(data=images.truncated_jpeg_bytes())
    assert statements_of(job) == ["UPDATE", "UPDATE", "SELECT"]
    assert Job.objects.get(id=job.id).error_code == "corrupt_image"
