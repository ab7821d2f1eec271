"""Traffic split: a service's jobs go to worker pools (queues) by weight, each pool's workers take
only its jobs, and the queue status, metrics and scaler see each pool."""

import os
import signal
import time
import uuid
from collections import Counter

import dramatiq
import pytest
from django.core.management import call_command
from django_dramatiq.management.commands.rundramatiq import Command as RunDramatiq

from processing.jobs.pools import DEFAULT_POOL, Share, SplitError, all_pools, parse_split, pool_for
from processing.models import Job
from processing.worker.actors import declare_pools
from scaler.backends.local import LocalWorkers
from scaler.backends.processes import WORKER_MODULES, worker_command
from tests.services import require
from tests.stack import MANAGE, LiveStack
from tests.test_settings import check_errors
from tests.test_workers_live import small_png
from tests.uploads import submit


def test_a_split_reads_as_services_and_their_weighted_pools():
    split = parse_split("sobel: images 90, sobel-canary 10; resize: resize-b 1")

    assert split == {
        "sobel": (Share("images", 90), Share("sobel-canary", 10)),
        "resize": (Share("resize-b", 1),),
    }
    assert all_pools(split) == ("images", "resize-b", "sobel-canary")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sobel images 90", "service: pool weight"),
        ("sobel: images ninety", "whole number"),
        ("sobel: Images 90", "lowercase"),
        ("sobel: images 0, canary 0", "add up to 0"),
        ("sobel: images 1; sobel: canary 1", "twice"),
    ],
)
def test_a_split_that_cannot_be_read_says_where(text, says):
    with pytest.raises(SplitError, match=says):
        parse_split(text)


def test_jobs_go_to_pools_in_proportion_to_the_weights_and_each_job_always_to_the_same_one():
    split = parse_split("sobel: images 90, canary 10")
    ids = [uuid.uuid4() for _ in range(20_000)]

    share = Counter(pool_for(split, "sobel", job_id) for job_id in ids)

    assert abs(share["canary"] / len(ids) - 0.10) < 0.01
    assert all(pool_for(split, "sobel", job_id) == pool_for(split, "sobel", job_id) for job_id in ids[:100])
    assert {pool_for(split, "blur", job_id) for job_id in ids[:100]} == {DEFAULT_POOL}


def test_a_split_naming_an_unknown_service_fails_the_system_check(settings):
    # A malformed split is refused as its value is read: tests/test_settings.py.
    assert "darkroom.E004" in check_errors(settings, TRAFFIC_SPLIT="sobell: images 1")
    assert "darkroom.E004" not in check_errors(settings, TRAFFIC_SPLIT="sobel: images 1")


@pytest.mark.django_db(transaction=True)
def test_a_split_service_goes_to_its_pool_where_only_that_pools_worker_takes_it(
    client, stub_broker, settings
):
    settings.TRAFFIC_SPLIT = parse_split("blur: canary 1")
    settings.METRICS_TOKEN = "metrics-token"
    declare_pools()  # as a process does at start-up, with the split it starts with
    canary_job = submit(client, "blur").json()["job_id"]
    other_job = submit(client, "grayscale").json()["job_id"]

    assert Job.objects.get(id=canary_job).pool == "canary"
    assert (stub_broker.queues["canary"].qsize(), stub_broker.queues["images"].qsize()) == (1, 1)
    status = client.get("/api/v1/queue/status").json()
    assert {queue["name"] for queue in status["queues"]} == {"images", "canary", "callbacks"}
    assert {row["pool"]: row["jobs_queued"] for row in status["pools"]} == {"canary": 1, "images": 1}

    canary_worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=1, queues={"canary"})
    canary_worker.start()
    try:
        stub_broker.join("canary")
        canary_worker.join()
    finally:
        canary_worker.stop()

    assert Job.objects.get(id=canary_job).status == "completed"
    assert Job.objects.get(id=other_job).status == "queued"  # no worker of its pool ran
    metrics = client.get("/metrics", headers={"Authorization": "Bearer metrics-token"}).content.decode()
    assert 'darkroom_jobs_finished_total{pool="canary",service="blur",status="completed"}' in metrics


def test_a_worker_group_imports_the_actors_rundramatiq_would_find():
    # rundramatiq's first module sets Django up; ours does the same where manage.py isn't there to name
    # the settings.
    setup, *actors = RunDramatiq().discover_tasks_modules()
    assert setup == "django_dramatiq.setup"
    assert ["project.dramatiq_setup", *actors] == WORKER_MODULES


def test_a_pools_workers_consume_its_queue_and_the_callbacks_alone():
    assert worker_command(2, "canary")[-3:] == ["--queues", "canary", "callbacks"]
    assert LocalWorkers(threads=1, pool="canary").command[-3:] == ["--queues", "canary", "callbacks"]


def test_a_pools_workers_are_named_after_it_in_the_scalers_health_and_metrics():
    assert LocalWorkers(threads=1, pool="canary").name == "canary"
    assert LocalWorkers(threads=1).name == DEFAULT_POOL


@pytest.mark.django_db
def test_a_jobs_json_says_which_pool_it_went_to(client, stub_broker, settings):
    settings.TRAFFIC_SPLIT = parse_split("blur: canary 1")
    declare_pools()
    canary_job = submit(client, "blur").json()
    other_job = submit(client, "grayscale").json()

    assert (canary_job["pool"], other_job["pool"]) == ("canary", "images")
    assert client.get(f"/api/v1/jobs/{canary_job['job_id']}").json()["pool"] == "canary"


def test_run_workers_and_scale_workers_take_the_pool_as_a_flag(capsys):
    for command in ("run_workers", "scale_workers"):
        with pytest.raises(SystemExit):
            call_command(command, "--help")
        assert "--pool" in capsys.readouterr().out


# --- On RabbitMQ ----------------------------------------------------------------------------


@pytest.mark.services
def test_on_rabbitmq_a_canary_pool_takes_the_split_jobs_and_leaves_the_others(tmp_path):
    require("postgres", "rabbitmq", "redis")
    split = {"TRAFFIC_SPLIT": "grayscale: canary 1", "WORKER_POOL": "canary"}
    with LiveStack(tmp_path, **split) as stack:
        stack.start_server()
        stack.spawn("workers", [*MANAGE, "run_workers", "--processes", "1", "--threads", "1"])
        canary = stack.submit("grayscale", small_png(), filename="a.png")["job_id"]
        other = stack.submit("blur", small_png(), filename="b.png")["job_id"]

        deadline = time.monotonic() + 60
        while stack.job(canary)["status"] != "completed":
            assert time.monotonic() < deadline, stack.log("workers")[-3000:]
            time.sleep(0.2)

        assert stack.job(other)["status"] == "queued"
        with stack.client() as client:
            queues = {q["name"]: q for q in client.get("/api/v1/queue/status").json()["queues"]}
        assert queues["images"]["ready"] == 1 and queues["canary"]["ready"] == 0


@pytest.mark.services
def test_on_rabbitmq_a_pool_chosen_by_flag_is_consumed_without_a_split_in_the_workers_environment(tmp_path):
    require("postgres", "rabbitmq", "redis")
    with LiveStack(tmp_path, TRAFFIC_SPLIT="grayscale: canary 1") as stack:
        stack.start_server()
        canary = stack.submit("grayscale", small_png(), filename="a.png")["job_id"]
        # The workers' environment names neither the split nor the pool: the flag alone chooses it.
        command = [*MANAGE, "run_workers", "--processes", "1", "--threads", "1", "--pool", "canary"]
        stack.spawn("workers", command, TRAFFIC_SPLIT="", WORKER_POOL="images")

        deadline = time.monotonic() + 90
        while stack.job(canary)["status"] != "completed":
            assert time.monotonic() < deadline, stack.log("workers")[-3000:]
            time.sleep(0.2)


@pytest.mark.services
def test_on_rabbitmq_a_worker_that_would_consume_nothing_refuses_to_start(tmp_path):
    require("postgres", "rabbitmq", "redis")
    with LiveStack(tmp_path) as stack:
        # Its process declares only "images" (WORKER_POOL, no split): a queue it doesn't know is no work.
        worker = stack.spawn("worker", worker_command(1, "nowhere"), WORKER_POOL="images", TRAFFIC_SPLIT="")
        try:
            assert worker.wait(timeout=90) != 0
        finally:
            stack.processes.pop("worker", None)
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)  # its group: the Dramatiq worker process it forked
        log = stack.log("worker")
        assert "would consume nothing: it was asked for nowhere" in log
        assert "ready for action" not in log
