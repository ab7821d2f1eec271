"""`manage.py scale_workers`: its settings from the environment, its flags, and `--once`."""

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from processing.models import Job
from project import config
from scaler import readings
from scaler.checks import SCALER_GROUPS
from scaler.management.commands.scale_workers import policies
from scaler.readings import Readings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("DATABASE_URL", "BROKER_URL", "REDIS_URL")


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SERVICES}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def scaler_settings(**env: str) -> dict:
    names = "MIN_INSTANCES MAX_INSTANCES SERVICES_COOLDOWN_PERIOD SCALE_CHECK_INTERVAL GATEWAY_MAX_INSTANCES"
    values = f"{{name: getattr(settings, name) for name in {names.split()!r}}}"
    code = f"import json; from django.conf import settings; print(json.dumps({values}))"
    result = manage("shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_defaults_are_the_declared_ones():
    assert scaler_settings() == {
        "MIN_INSTANCES": 1,
        "MAX_INSTANCES": 5,
        "SERVICES_COOLDOWN_PERIOD": 120.0,
        "SCALE_CHECK_INTERVAL": 30.0,
        "GATEWAY_MAX_INSTANCES": 3,
    }


def test_both_spellings_of_the_design_are_read_and_services_wins():
    found = scaler_settings(
        MIN_INSTANCES="2", SERVICES_MAX_INSTANCES="8", MAX_INSTANCES="6", COOLDOWN_PERIOD="60"
    )
    assert (found["MIN_INSTANCES"], found["MAX_INSTANCES"], found["SERVICES_COOLDOWN_PERIOD"]) == (2, 8, 60.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_INSTANCES": "many"}, "MAX_INSTANCES='many' is not an integer"),
        ({"SCALER_BACKEND": "nomad"}, "SCALER_BACKEND='nomad' is not local or kubernetes"),
        ({"MIN_INSTANCES": "4", "MAX_INSTANCES": "3"}, "darkroom.E101"),
        ({"SCALE_DOWN_THRESHOLD": "12"}, "darkroom.E102"),
        ({"GATEWAY_LOAD_THRESHOLD_DOWN": "90"}, "darkroom.E104"),
    ],
)
def test_contradicting_or_bad_settings_stop_the_start(env, message):
    result = manage("check", **env)
    assert result.returncode != 0
    assert message in result.stderr


def once() -> dict:
    out = StringIO()
    call_command("scale_workers", "--once", stdout=out)
    return json.loads(out.getvalue())


def test_once_reports_what_it_would_do_with_the_workers_rabbitmq_sees(monkeypatch):
    queue = {"name": "images", "ready": 30, "delayed": 0, "consumers": 2}
    asked = []
    monkeypatch.setattr(
        readings,
        "read",
        lambda pool=None: asked.append(pool) or Readings(broker_available=True, queues=(queue,), in_flight=0),
    )
    report = once()
    assert asked == ["images"]  # the pool it scales: WORKER_POOL
    decision = report["last_decisions"]["images"]
    assert (decision["from"], decision["to"]) == (2, 3) and "30 waiting + 0 in flight on 2" in decision[
        "reason"
    ]
    assert report["instances"]["images"] == {"target": 2, "observed_consumers": 2, "would_scale_to": 3}


def test_the_scaler_of_a_pool_names_its_figures_after_it(monkeypatch):
    queue = {"name": "canary", "ready": 0, "delayed": 0, "consumers": 1}
    monkeypatch.setattr(
        readings, "read", lambda pool=None: Readings(broker_available=True, queues=(queue,), in_flight=0)
    )
    out = StringIO()
    call_command("scale_workers", "--once", "--pool", "canary", stdout=out)
    report = json.loads(out.getvalue())
    assert set(report["instances"]) == set(report["last_decisions"]) == {"canary"}


@pytest.mark.django_db
def test_once_reads_the_queue_and_the_jobs_in_flight(stub_broker):
    from processing.worker.actors import process_job

    for _ in range(3):
        process_job.send("00000000-0000-0000-0000-000000000000")
    report = once()
    assert report["status"] == "ok" and report["queues"][0]["ready"] == 3 and report["jobs_in_flight"] == 0
    assert report["last_decisions"]["images"]["reason"] == "0 is outside 1..5: 1"  # no worker: start one
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-instances", "4", "--max-instances", "2"], "--min-instances 4 is above --max-instances 2"),
        (
            ["--scale-down-threshold", "20"],
            "--scale-down-threshold 20.0 is not below --scale-up-threshold 10.0",
        ),
        (["--gateway-down", "85"], "--gateway-down 85.0 is not below --gateway-up 80.0"),
        (["--interval", "0"], "--interval 0.0 must be positive"),
        (["--threads", "0"], "--threads=0 must be at least 1"),
        (["--max-instances", "many"], "--max-instances='many' is not an integer"),
        (["--backend", "nomad"], "--backend='nomad' is not local or kubernetes"),
        (["--gateways", "--backend", "kubernetes"], "--gateways runs gateway processes locally"),
        (["--gateways", "--pool", "gateways"], "--pool gateways is the gateways' name"),
    ],
)
def test_contradicting_or_bad_flags_are_refused_naming_them(flags, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("scale_workers", *flags)


def parsed(command: str, *flags: str) -> dict:
    """The options a command would run with: its flags over the settings."""
    from django.core.management import load_command_class

    parser = load_command_class("scaler", command).create_parser("manage.py", command)
    return vars(parser.parse_args(flags))


def test_every_scaler_setting_is_a_flag_defaulting_to_the_setting(settings):
    settings.MAX_INSTANCES = 9
    settings.SCALER_BACKEND = "kubernetes"
    options = parsed("scale_workers")
    scaler = [s for s in config.SETTINGS if s.group in SCALER_GROUPS and s.django]  # not Kubernetes' own
    assert all(setting.flag for setting in scaler)
    assert {s.name: options[s.name] for s in scaler} == {s.name: getattr(settings, s.name) for s in scaler}
    assert (options["MAX_INSTANCES"], options["SCALER_BACKEND"]) == (9, "kubernetes")


def test_a_flag_overrides_its_setting_and_reaches_the_policy(settings):
    settings.SCALE_UP_THRESHOLD = 10
    options = parsed("scale_workers", "--scale-up-threshold", "25", "--gateway-sustain", "5")
    workers, gateways = policies(options)
    assert workers.scale_up_threshold == 25.0
    assert workers.max_instances == settings.MAX_INSTANCES  # not given: the setting
    assert gateways.sustain == 5.0


def test_the_flags_help_says_what_each_does_and_where_its_default_comes_from():
    out = subprocess.run(
        [sys.executable, "manage.py", "scale_workers", "--help"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "--cooldown" in out and "Seconds between two scaling actions on the workers" in out
    assert "SERVICES_COOLDOWN_PERIOD or COOLDOWN_PERIOD" in " ".join(out.split())


def test_run_workers_takes_its_counts_from_the_settings(settings):
    settings.WORKER_PROCESSES, settings.WORKER_THREADS = 3, 4
    options = parsed("run_workers")
    assert (options["WORKER_PROCESSES"], options["WORKER_THREADS"]) == (3, 4)
    assert parsed("run_workers", "--processes", "2")["WORKER_PROCESSES"] == 2


@pytest.mark.parametrize("flags", [["--processes", "0"], ["--threads", "0"]])
def test_run_workers_refuses_to_run_nothing(flags):
    with pytest.raises(CommandError, match="must be at least 1"):
        call_command("run_workers", *flags)
