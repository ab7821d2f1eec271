"""The house's walls: the domain (processing/) stands on its own, and a worker never loads the gateway."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.services import require, url_of

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_processing_imports_nothing_from_the_gateway_or_the_scaler():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in ("gateway", "scaler")
        )
        for path in (ROOT / "processing").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_worker_reaches_the_lease_only_through_the_job_lifecycle():
    def imports_the_lease(path: Path) -> bool:
        tree = ast.parse(path.read_text(), filename=str(path))
        return any(
            isinstance(node, ast.ImportFrom)
            and (
                node.module == "processing.jobs.lease"
                or (node.module == "processing.jobs" and any(alias.name == "lease" for alias in node.names))
            )
            for node in ast.walk(tree)
        )

    worker = ROOT / "processing" / "worker"
    assert [str(path.relative_to(ROOT)) for path in worker.rglob("*.py") if imports_the_lease(path)] == []


# A worker process as a worker group starts one (scaler.backends.processes.worker_command): Django
# set up, the actors imported; then one job processed through the real actor, events and metrics
# included. It prints the gateway modules that Django's app registry loaded (the gateway is an
# installed app: its package, apps and models), then the job's status, then what of the HTTP side
# importing the actors and processing the job (its events sent) loaded, then the channel layer's class.
WORKER = textwrap.dedent(
    """
    import sys
    import django
    django.setup()

    def loaded():
        return {m for m in sys.modules if m.startswith(("project.urls", "gateway", "ninja"))}

    print(" ".join(sorted(loaded())))
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    before = loaded()
    from processing.worker.actors import process_job
    from tests.factories import stored_job
    job = stored_job("grayscale")
    process_job.fn(str(job.id))
    job.refresh_from_db()
    print(job.status)
    print(" ".join(sorted(loaded() - before)))
    from channels.layers import get_channel_layer
    print(type(get_channel_layer()).__module__)
    """
)


@pytest.mark.parametrize("channel_layer", ["in-memory", "redis"])
def test_a_worker_processes_a_job_without_loading_any_gateway_module(tmp_path, channel_layer):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings", DARKROOM_VAR_DIR=str(tmp_path), EMBEDDED_WORKERS="false"
    )
    if channel_layer == "redis":  # as in production: the job's events go out through Redis
        require("redis")
        env["REDIS_URL"] = url_of("redis")
    done = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    registered, status, loaded, layer = (done.stdout.splitlines() + [""] * 4)[:4]
    assert registered == "gateway gateway.apps gateway.models", "setting Django up loaded more of the gateway"
    assert status == "completed"
    assert loaded == "", f"a worker loaded the gateway: {loaded}"
    assert layer == {"in-memory": "channels.layers", "redis": "processing.events.layer"}[channel_layer]
