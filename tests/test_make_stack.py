"""`make stack`: the full stack on one machine in one command (the Procfile, run by honcho), its
settings from a file, every process's lines prefixed with its name, Ctrl-C stopping them all."""

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from scaler.backends.processes import ROOT
from tests import images
from tests.stack import LiveStack, announced_port

pytestmark = pytest.mark.services

PROCESSES = ("web", "worker", "requeue", "cleanup")
PREFIXED = re.compile(r"^\d\d:\d\d:\d\d (system|web\.1|worker\.1|requeue\.1|cleanup\.1) *\| ")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_make_stack_runs_every_process_completes_a_job_and_stops_them_all_at_ctrl_c(tmp_path):
    with LiveStack(tmp_path) as stack:  # a database and a vhost of its own, named in its settings file
        settings = tmp_path / "stack.env"
        names = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "SECRET_KEY", "DARKROOM_VAR_DIR")
        settings.write_text("".join(f"{name}={stack.env[name]}\n" for name in names) + "WORKER_PROCESSES=1\n")
        make = ["make", "--no-print-directory", f"STACK_ENV={settings}"]
        log = tmp_path / "make-stack.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [*make, "stack", "PORT=0"], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own, as a terminal's foreground job
            )  # fmt: skip
        try:
            stack.base_url = f"http://127.0.0.1:{announced_port(log, process, timeout=180)}"
            stack.wait_until(stack.is_live, 60, "the gateway to answer")
            started = lambda: all(f"{name}.1 started" in log.read_text() for name in PROCESSES)  # noqa: E731
            stack.wait_until(started, 30, "every process of the Procfile to start")

            key = subprocess.run(
                [*make, "-s", "api-key"], cwd=ROOT, capture_output=True, text=True, check=True
            )
            headers = {"Authorization": f"Bearer {key.stdout.strip()}"}
            image = {"image": ("photo.jpg", images.jpeg_bytes(images.gradient(64, 48)))}
            url = f"{stack.base_url}/api/v1/process/grayscale"
            assert httpx.post(url, files=image, timeout=30).status_code == 401  # a key is required
            job = httpx.post(url, files=image, headers=headers, timeout=30).json()
            done = httpx.get(
                f"{stack.base_url}/api/v1/jobs/{job['job_id']}",
                params={"wait": 60},
                headers=headers,
                timeout=90,
            ).json()
            assert done["status"] == "completed", done
        finally:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: a terminal sends it to the whole group
            stopped = process.wait(timeout=200)

    lines = log.read_text().splitlines()
    ran = lines[next(i for i, line in enumerate(lines) if PREFIXED.match(line)) :]  # after the set-up
    # make ends once everything has stopped: by the Ctrl-C it got too, as make does, or cleanly.
    assert stopped in (0, -signal.SIGINT), "\n".join(lines[-30:])
    assert all(PREFIXED.match(line) for line in ran), [line for line in ran if not PREFIXED.match(line)]
    assert all(any(f" {name}.1 " in line for line in ran if "system" not in line) for name in PROCESSES)
    assert [line for line in ran if re.search(r"ERROR|CRITICAL|Traceback|SIGKILL|lifespan", line)] == []
    pids = [int(pid) for pid in re.findall(r"(?:started \(pid=|started worker group )(\d+)", "\n".join(ran))]
    assert len(pids) == len(PROCESSES) + 1 and all(gone(pid) for pid in pids)  # the worker group too
