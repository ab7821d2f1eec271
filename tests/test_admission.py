"""Memory admission: jobs hold a machine-wide budget of pixels, wait while it is spent, and a dead
process's share comes back. The states are arranged with events, never waited for by the clock."""

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from processing.models import Job
from processing.worker import admission
from tests.uploads import submit

BUDGET = 1_000


@pytest.fixture
def small_budget(settings):
    settings.WORKER_PIXEL_BUDGET = BUDGET


def ledger() -> dict:
    return admission.Ledger(admission.ledger_path()).read()


def until(condition, what: str, timeout: float = 10) -> None:
    """Wait for a state another thread arrives at (the timeout only bounds a failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


class HeldJob:
    """A job admitted with `pixels` in a thread of its own, which leaves when told to."""

    def __init__(self, pixels: int):
        self.admitted, self.leave = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.run, args=(pixels,), daemon=True)
        self.thread.start()

    def run(self, pixels: int) -> None:
        with admission.admitted(pixels):
            self.admitted.set()
            self.leave.wait(30)

    def finish(self) -> None:
        self.leave.set()
        self.thread.join(10)


def machine() -> dict:
    return admission.summary(ledger())


def test_a_job_that_does_not_fit_waits_until_pixels_are_freed(small_budget):
    first = HeldJob(800)
    assert first.admitted.wait(10)
    second = HeldJob(300)
    until(lambda: machine()["jobs_waiting"] == 1, "the second job waiting")
    assert not second.admitted.is_set()
    assert machine()["pixels_admitted"] == 800

    first.finish()

    assert second.admitted.wait(10)
    assert (machine()["pixels_admitted"], machine()["jobs_waiting"]) == (300, 0)
    second.finish()
    assert machine()["pixels_admitted"] == 0


def test_jobs_that_fit_together_run_together(small_budget):
    jobs = [HeldJob(400), HeldJob(500)]
    assert all(job.admitted.wait(10) for job in jobs)
    assert machine()["jobs_admitted"] == 2
    for job in jobs:
        job.finish()


def test_a_job_larger_than_the_budget_runs_alone(small_budget):
    small = HeldJob(100)
    assert small.admitted.wait(10)
    huge = HeldJob(50 * BUDGET)
    until(lambda: machine()["jobs_waiting"] == 1, "the huge job waiting")

    small.finish()
    assert huge.admitted.wait(10)
    assert machine()["pixels_admitted"] == BUDGET  # the whole budget, no more
    another = HeldJob(1)
    until(lambda: machine()["jobs_waiting"] == 1, "even a tiny job waiting behind it")
    huge.finish()
    assert another.admitted.wait(10)
    another.finish()


def test_the_pixels_of_a_process_that_died_go_back_to_the_budget(small_budget):
    gone = subprocess.Popen(["true"])
    gone.wait()
    admission.ledger_path().write_text(json.dumps({str(gone.pid): {"pixels": BUDGET, "jobs": 1}}))

    job = HeldJob(BUDGET)

    assert job.admitted.wait(10)
    assert list(ledger()) == [str(os.getpid())]
    job.finish()


def test_a_torn_ledger_is_started_afresh(small_budget):
    admission.ledger_path().write_text('{"123": {"pix')
    job = HeldJob(10)
    assert job.admitted.wait(10)
    job.finish()


def test_the_ledger_file_stays_as_small_as_its_longest_state(small_budget):
    """It is rewritten in place, never appended to: a machine's ledger must not fill its disk."""
    held = HeldJob(100)
    assert held.admitted.wait(10)
    longest = admission.ledger_path().stat().st_size
    held.finish()
    for _ in range(200):
        with admission.admitted(10):
            pass
    assert admission.ledger_path().stat().st_size <= longest
    assert ledger() == {}  # the shorter state, padded over the longer one, reads back as itself


@contextlib.contextmanager
def ledger_locked_elsewhere():
    """The ledger's lock held as a stopped or hung process would hold it (flock: another open file)."""
    admission.ledger_path().touch()
    with open(admission.ledger_path()) as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        yield


@pytest.fixture
def short_lock_wait(monkeypatch):
    monkeypatch.setattr(admission, "LOCK_WAIT_SECONDS", 0.05)


def test_a_ledger_locked_by_a_stuck_process_does_not_stall_jobs(small_budget, short_lock_wait, caplog):
    ran = False
    caplog.set_level(logging.WARNING, "processing.worker.admission")
    with ledger_locked_elsewhere(), admission.admitted(BUDGET):  # would wait for ever behind the lock
        ran = True
    assert ran
    assert "runs without being counted" in caplog.text
    assert machine()["pixels_admitted"] == 0  # and gives back nothing it did not take


def test_pixels_given_back_while_the_ledger_is_locked_are_recorded_at_its_next_opening(
    small_budget, short_lock_wait
):
    job = HeldJob(BUDGET)
    assert job.admitted.wait(10)
    with ledger_locked_elsewhere():
        job.finish()  # its release finds the ledger locked
    assert machine()["pixels_admitted"] == 0
    again = HeldJob(BUDGET)
    assert again.admitted.wait(10), "the whole budget is free again"
    again.finish()


def test_the_default_budget_is_a_share_of_the_memory_limit(settings):
    settings.WORKER_PIXEL_BUDGET = 0
    limit = admission.memory_limit()
    assert limit > 0
    assert admission.pixel_budget() == int(limit * admission.MEMORY_SHARE / admission.BYTES_PER_PIXEL)


@pytest.mark.django_db(transaction=True)
def test_queue_status_shows_the_machine_budget_and_a_worker_runs_its_jobs_within_it(
    client, run_jobs, settings, api_key
):
    settings.WORKER_PIXEL_BUDGET = 5_000  # a 64 x 48 blur holds 6,144 pixels: more than all of it
    job_ids = [submit(client, "blur").json()["job_id"] for _ in range(3)]
    run_jobs()

    assert set(Job.objects.filter(id__in=job_ids).values_list("status", flat=True)) == {"completed"}
    admission.status_writer.flush()  # what its thread writes within a second
    staff = api_key("ops", staff=True)  # machines are named to staff only
    memory = client.get("/api/v1/queue/status", headers=staff).json()["memory"]
    mine = [entry for entry in memory if entry["host"] == admission.summary({})["host"]]
    assert mine and mine[0]["pixel_budget"] == 5_000
    assert (mine[0]["pixels_admitted"], mine[0]["jobs_waiting"]) == (0, 0)


# A process that frees and allocates an HD-sized array over and over, then prints its page faults.
REUSE_STEPS = """
import resource, sys
import numpy as np
from processing.worker import admission
if sys.argv[1] == "keep":
    admission.keep_freed_memory()
np.ones((1080, 1920), np.float32)  # the first one is faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones((1080, 1920), np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", REUSE_STEPS, mode], capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout)


def test_a_worker_process_reuses_what_its_jobs_free_instead_of_faulting_it_in_again():
    """What worker processes get at boot (processing.worker.middleware.ReuseFreedMemory): an 8 MB array freed
    and made again costs no new pages, where glibc's defaults give it back and fault it in again."""
    made_again = 20  # arrays; each faults in a page at least (a 2 MB one with transparent huge pages)
    assert page_faults("default") >= made_again
    assert page_faults("keep") < made_again
