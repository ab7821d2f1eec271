"""`make bench-ws` end to end, at a size that takes seconds: two gateway processes on one port,
clients from two loopback addresses, a reconnect storm. What it asserts is what the lead's runs at
100,000 rely on (every figure and every verdict printed, nobody lost), never how fast it went."""

import os
import re
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench.websockets import ROOT, can_listen_on, report_storm, verdicts
from tests.services import IN_CI, require, url_of

pytestmark = pytest.mark.services

CLIENTS = 60


@pytest.fixture(scope="module")
def printed() -> str:
    require("postgres")
    if not shutil.which("redis-server"):
        message = "needs redis-server on the PATH"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    run = [sys.executable, "-m", "bench.websockets", "--clients", str(CLIENTS), "--processes", "2"]
    run += ["--client-processes", "2", "--rate", "20", "--duration", "2", "--storm-jobs-for", "1"]
    env = {**os.environ, "DATABASE_URL": url_of("postgres")}
    done = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_every_client_connects_and_each_socket_is_counted_for_the_process_holding_it(printed):
    assert f"connections:         {CLIENTS} open (0 failed)" in printed
    held = [int(count) for count in re.findall(r"^  gateway \d+: (\d+) sockets$", printed, re.M)]
    assert sum(held) == CLIENTS and 1 <= len(held) <= 2, printed
    assert "server memory, all gateways:" in printed


def test_every_completion_reaches_its_client_through_the_run_and_the_storm(printed):
    assert "completed events never received: 0" in printed
    assert "sockets the server closed early: 0" in printed
    assert "completions during the storm that reached no client: 0" in printed
    assert "clients not back within the storm's timeout (failures): 0" in printed


def test_it_prints_a_verdict_for_each_goal(printed):
    verdicts = re.findall(r"^(PASS|FAIL)  (\S+)", printed, re.M)
    assert len(verdicts) == 5, printed
    assert verdicts[-1][1] == "storm:" and "did not come back" not in printed


def test_a_gateway_restarts_on_its_port_only_once_nothing_listens_on_it():
    """The storm's restart waits for this: a killed gateway's thread may still hold the port."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        listening.listen()
        assert not can_listen_on(port)
    assert can_listen_on(port)


def test_a_storm_whose_jobs_stopped_finishing_says_so_and_fails_its_goal(capsys):
    """Else no job would count as finished during it, and so none as lost: a storm that looks perfect."""
    storm = {"error": None, "driver error": "OperationalError: couldn't get a connection", "back": 60}
    storm |= {"until all back": 1.0, "failures": 0, "refused attempts": 0, "never": 0, "inboxes full": 0}
    storm |= {"peak KiB": {"1": 200 * 1024}}

    report_storm(storm)
    verdicts(SimpleNamespace(), 60, 0, None, 100.0, 0.01, 0, 0, storm)

    printed = capsys.readouterr().out
    assert "the jobs stopped finishing during the storm: OperationalError" in printed
    assert [line for line in printed.splitlines() if line.endswith("largest process 200 MiB")] == [
        "FAIL  storm: every client back with its state within 60 s, 0 failures, no process over 1024 MiB: "
        "1.0 s, 0 failures, 0 completions lost, largest process 200 MiB"
    ]
