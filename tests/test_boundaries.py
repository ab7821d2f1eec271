"""The house's walls: the domain (processing/) stands on its own, and a worker never loads the HTTP side."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
# included.
WORKER = textwrap.dedent(
    """
    import sys
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from processing.worker.actors import process_job
    from processing.models import Job
    from tests.factories import stored_job
    job = stored_job("grayscale")
    process_job.fn(str(job.id))
    job.refresh_from_db()
    print(job.status)
    print(" ".join(sorted(m for m in sys.modules if m.startswith(("project.urls", "gateway.api", "ninja")))))
    """
)


def test_a_worker_processes_a_job_without_loading_the_url_conf_or_the_api(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings", DARKROOM_VAR_DIR=str(tmp_path), EMBEDDED_WORKERS="false"
    )
    done = subprocess.run(
        [sys.executable, "-c", WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status, loaded = (done.stdout.splitlines() + ["", ""])[:2]
    assert status == "completed"
    assert loaded == "", f"a worker loaded the HTTP side: {loaded}"
