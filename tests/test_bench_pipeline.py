"""bench.pipeline's pure parts: CPU accounting from /proc snapshots, the fixed cost, the goals, the client."""

import argparse
import os
import re
import subprocess
import sys
import threading

import httpx
import pytest

from bench.pipeline import (
    CpuSample,
    Proc,
    cpu_by_kind,
    cpu_per_job,
    goals,
    other_cores,
    parse_args,
    parse_stat,
    report,
    run_job,
)

CLIENT = 500
SERVER, WORKER = 600, 700  # process group leaders, as bench.stack starts them
GROUPS = {SERVER: "server", WORKER: "workers"}


def proc(pid: int, comm: str, ppid: int = 1, pgrp: int | None = None, cpu_s: float = 0.0) -> Proc:
    return Proc(pid, comm, ppid=ppid, pgrp=pid if pgrp is None else pgrp, cpu_s=cpu_s)


def sample(*procs: Proc, at: float = 0.0, busy_s: float = 0.0) -> CpuSample:
    return CpuSample(at, busy_s, {p.pid: p for p in procs})


# --- /proc/<pid>/stat ----------------------------------------------------------------
def test_a_stat_line_gives_the_process_its_group_and_all_four_cpu_times():
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt, then
    # utime stime cutime cstime (fields 14 to 17)
    line = "4242 (postgres) S 2187 2187 2187 0 -1 4194560 10 0 0 0 150 50 300 100 20 0 1 0 99\n"
    assert parse_stat(line, tick=100) == Proc(4242, "postgres", ppid=2187, pgrp=2187, cpu_s=6.0)


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields():
    line = "77 (my (odd) name) R 1 77 77 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5\n"
    parsed = parse_stat(line, tick=100)
    assert (parsed.comm, parsed.ppid, parsed.cpu_s) == ("my (odd) name", 1, pytest.approx(0.3))


# --- CPU by process kind ---------------------------------------------------------------
def test_each_kind_is_charged_what_its_processes_spent_between_the_samples():
    start = sample(
        proc(SERVER, "python", ppid=CLIENT, cpu_s=1.0),
        proc(WORKER, "dramatiq", ppid=CLIENT, cpu_s=0.5),
        proc(701, "dramatiq", ppid=WORKER, pgrp=WORKER, cpu_s=2.0),
        proc(2936, "beam.smp", cpu_s=10.0),
        proc(2948, "erl_child_setup", ppid=2936, cpu_s=0.1),
        proc(2207, "redis-server", cpu_s=3.0),
        proc(CLIENT, "python", ppid=400, pgrp=400, cpu_s=4.0),
    )
    end = sample(
        proc(SERVER, "python", ppid=CLIENT, cpu_s=1.25),
        proc(WORKER, "dramatiq", ppid=CLIENT, cpu_s=0.5),
        proc(701, "dramatiq", ppid=WORKER, pgrp=WORKER, cpu_s=3.5),
        proc(2936, "beam.smp", cpu_s=10.75),
        proc(2948, "erl_child_setup", ppid=2936, cpu_s=0.35),
        proc(2207, "redis-server", cpu_s=3.125),
        proc(CLIENT, "python", ppid=400, pgrp=400, cpu_s=4.5),
    )
    cpu = cpu_by_kind(start, end, GROUPS, CLIENT)
    assert cpu == pytest.approx(
        {"server": 0.25, "workers": 1.5, "postgres": 0.0, "rabbitmq": 1.0, "redis": 0.125, "client": 0.5}
    )


def test_a_postgres_backend_that_ends_mid_run_is_counted_once_through_the_postmasters_reaped_time():
    # Backend 9001 spent 2 s before the run and 1 s during it; the postmaster reaped it (cutime += 3 s).
    # Backend 9002 came and went during the run (0.5 s), 9003 started during it and is still there (0.25 s).
    start = sample(proc(2187, "postgres", cpu_s=5.0), proc(9001, "postgres", ppid=2187, cpu_s=2.0))
    end = sample(
        proc(2187, "postgres", cpu_s=5.0 + 0.1 + 3.0 + 0.5),  # its own 0.1 s, then 9001's and 9002's
        proc(9003, "postgres", ppid=2187, cpu_s=0.25),
    )
    assert cpu_by_kind(start, end, GROUPS, CLIENT)["postgres"] == pytest.approx(1.0 + 0.5 + 0.25 + 0.1)


def test_a_pid_reused_by_another_kind_of_process_moves_no_time_between_kinds():
    start = sample(proc(2187, "postgres", cpu_s=5.0), proc(9001, "postgres", ppid=2187, cpu_s=2.0))
    end = sample(proc(2187, "postgres", cpu_s=7.5), proc(9001, "bash", ppid=1, cpu_s=40.0))
    cpu = cpu_by_kind(start, end, GROUPS, CLIENT)
    assert cpu["postgres"] == pytest.approx(0.5)
    assert sum(cpu.values()) == pytest.approx(0.5)


def test_processes_outside_the_stack_and_rabbitmqs_epmd_are_no_kind():
    start = sample(proc(300, "bash", cpu_s=1.0), proc(2891, "epmd", cpu_s=1.0), proc(301, "make", ppid=300))
    end = sample(proc(300, "bash", cpu_s=9.0), proc(2891, "epmd", cpu_s=2.0), proc(301, "make", ppid=300))
    assert set(cpu_by_kind(start, end, GROUPS, CLIENT).values()) == {0.0}


def test_the_raw_loops_pool_processes_are_the_clients():
    start = sample(proc(CLIENT, "python", ppid=400, pgrp=400), proc(801, "python", ppid=CLIENT, pgrp=400))
    end = sample(
        proc(CLIENT, "python", ppid=400, pgrp=400, cpu_s=0.5),
        proc(801, "python", ppid=CLIENT, pgrp=400, cpu_s=3.0),
    )
    assert cpu_by_kind(start, end, {}, CLIENT)["client"] == pytest.approx(3.5)


def test_a_plain_set_of_groups_counts_them_as_the_stack():
    from bench.pipeline import OtherLoad

    assert OtherLoad({SERVER, WORKER}).groups == {SERVER: "stack", WORKER: "stack"}


def test_other_load_is_the_busy_time_that_no_kind_accounts_for_over_the_wall_time():
    start, end = sample(at=10.0, busy_s=100.0), sample(at=12.0, busy_s=103.0)
    assert other_cores(start, end, {"workers": 2.0, "postgres": 0.5}) == pytest.approx(0.25)
    assert other_cores(start, end, {"workers": 3.5}) == 0.0  # never negative from tick rounding


# --- the fixed cost and the goals ---------------------------------------------------------
def test_the_fixed_cost_is_the_stacks_cpu_per_job_beyond_the_raw_work_and_leaves_the_client_out():
    seconds = {"server": 0.4, "workers": 2.0, "postgres": 0.2, "rabbitmq": 0.2, "redis": 0.1, "client": 0.6}
    cpu = cpu_per_job(seconds, jobs=100, raw_per_image_ms=25.0)
    assert cpu["by_kind"]["workers"] == pytest.approx(20.0)
    assert cpu["stack"] == pytest.approx(29.0)
    assert cpu["total"] == pytest.approx(35.0)
    assert cpu["fixed_cost"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("service", "ratio", "verdict"),
    [
        ("grayscale", 0.75, "met"),
        ("grayscale", 0.74, "missed"),
        ("sobel", 0.8, "missed"),
        ("crop", 0.5, "met"),
    ],
)
def test_the_throughput_goal_depends_on_the_service(service, ratio, verdict):
    assert goals(service, ratio, None, None)["pipeline_over_raw"]["verdict"] == verdict


def test_a_service_without_a_throughput_goal_has_no_throughput_verdict():
    assert "pipeline_over_raw" not in goals("blur", 0.9, None, None)


@pytest.mark.parametrize(
    ("fixed_cost", "p50", "p99", "verdicts"),
    [
        (5.0, 10.0, 50.0, ["met", "met", "met"]),
        (5.1, 9.0, 51.0, ["missed", "met", "missed"]),
        (2.0, 10.5, 20.0, ["met", "missed", "met"]),
    ],
)
def test_the_fixed_cost_and_the_concurrency_1_overhead_are_limits(fixed_cost, p50, p99, verdicts):
    checks = goals("resize", 0.9, {"fixed_cost": fixed_cost}, {"p50": p50, "p99": p99})
    names = ["fixed_cost_ms", "overhead_c1_p50_ms", "overhead_c1_p99_ms"]
    assert [checks[name]["verdict"] for name in names] == verdicts
    assert checks["fixed_cost_ms"]["goal"] == "<= 5 ms"


def test_goals_without_a_figure_are_unknown_not_met():
    checks = goals("sobel", None, None, None)
    assert {check["verdict"] for check in checks.values()} == {"unknown"}


# --- the client ----------------------------------------------------------------------------
def fake_darkroom(unfinished_answers: int, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json={"job_id": "j1", "status": "queued"})
        reads = sum(1 for r in seen if r.method == "GET")
        status = "completed" if reads > unfinished_answers else "processing"
        return httpx.Response(200, json={"job_id": "j1", "status": status})

    return httpx.MockTransport(handle)


def client_job(unfinished_answers: int, poll: float | None) -> tuple:
    seen = []
    transport = fake_darkroom(unfinished_answers, seen)
    with httpx.Client(base_url="http://darkroom", transport=transport) as client:
        job = run_job(client, "grayscale", b"jpeg", {}, poll, threading.Event())
    return job, [r for r in seen if r.method == "GET"]


def test_by_default_a_job_is_waited_for_with_one_long_poll():
    job, reads = client_job(unfinished_answers=0, poll=None)
    assert job.ok and job.reads == 1
    assert [r.url.params.get("wait") for r in reads] == ["30"]


def test_a_long_poll_that_runs_out_before_the_job_ends_is_asked_again():
    job, reads = client_job(unfinished_answers=2, poll=None)
    assert job.ok and job.reads == 3
    assert all(r.url.params.get("wait") == "30" for r in reads)


def test_with_poll_the_client_reads_the_job_without_waiting():
    job, reads = client_job(unfinished_answers=2, poll=0.001)
    assert job.ok and job.reads == 3
    assert all("wait" not in r.url.params for r in reads)


def test_the_defaults_are_concurrency_16_and_long_polls():
    args = parse_args([])
    assert (args.concurrency, args.jobs, args.latency_jobs, args.poll) == (16, 200, 50, None)


# --- the report ------------------------------------------------------------------------------
def test_the_report_prints_the_cpu_table_the_fixed_cost_and_each_goals_verdict():
    args = argparse.Namespace(
        service="grayscale",
        width=640,
        height=480,
        jobs=100,
        concurrency=16,
        latency_jobs=50,
        workers=2,
        threads=1,
    )
    pipeline = {"jobs": 100, "completed": 100, "failed": 0, "jobs_per_s": 30.0, "wall_s": 3.33}
    pipeline |= {
        "latency_ms": {"p50": 400.0, "p95": 600.0, "p99": 700.0},
        "processing_ms_mean": 30.0,
        "processing_steps_ms": {"rest": 30.0},
        "overhead_ms": {"p50": 370.0, "p95": 500.0, "p99": 600.0, "mean": 380.0},
        "stages_ms_mean": {"work": 30.0},
        "reads_per_job": 1.0,
    }
    latency = pipeline | {"jobs": 50, "completed": 50, "overhead_ms": {"p50": 8.0, "p99": 60.0, "mean": 9.0}}
    seconds = {"server": 0.4, "workers": 2.0, "postgres": 0.2, "rabbitmq": 0.2, "redis": 0.1, "client": 0.6}
    cpu = cpu_per_job(seconds, 100, 25.0)
    summary = {
        "params": {},
        "image": {"bytes": 10240},
        "wait": "long poll ?wait=30",
        "other_load_cores": {"raw": 0.1, "pipeline": 0.2, "latency": None},
        "pipeline": pipeline,
        "raw": {"processes": 2, "images_per_s": 50.0, "images": 100, "wall_s": 2.0, "per_image_ms": 25.0}
        | {"stages_ms": {"decode": 10.0, "operation": 5.0, "encode": 10.0}},
        "pipeline_over_raw": 0.6,
        "cpu_ms_per_job": cpu,
        "latency_c1": latency,
        "goals": goals("grayscale", 0.6, cpu, latency["overhead_ms"]),
    }
    text = report(args, summary)
    assert "0.20 cores during the pipeline" in text and "unknown at concurrency 1" in text
    assert "CPU ms per job by process kind" in text
    assert re.search(r"workers \(dramatiq\)\s+20\.0\n", text)
    assert re.search(r"fixed cost per job\s+4\.0 ms \(stack 29\.0 - raw loop per image 25\.0\)", text)
    assert re.search(r"pipeline / raw throughput\s+0\.60\s+goal >= 0\.75\s+missed", text)
    assert re.search(r"fixed cost per job\s+4\.00\s+goal <= 5 ms\s+met", text)
    assert re.search(r"overhead at c=1, p50\s+8\.00\s+goal <= 10 ms\s+met", text)
    assert re.search(r"overhead at c=1, p99\s+60\.00\s+goal <= 50 ms\s+missed", text)


BENCHMARKS = [
    "bench.pipeline",
    "bench.raw",
    "bench.chaos",
    "bench.thumbor",
    "bench.api",
    "bench.websockets",
    "bench.formats",
    "bench.memory",
]


@pytest.mark.parametrize("command", [*BENCHMARKS, "bench.scaler"])
def test_each_benchmark_starts_as_make_runs_it_without_django_configured(command):
    """`make bench` and its peers run `python -m bench.X`: nothing they import may need Django's settings."""
    environment = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", command, "--help"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
