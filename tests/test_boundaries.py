"""The house's walls: each layer imports only those below it, no module imports itself back through
others, and a worker never loads the gateway."""

import ast
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.services import require, url_of

ROOT = Path(__file__).resolve().parent.parent

# Lowest first: each may import those before it, never those after. Dotted paths in strings (the
# MIDDLEWARE of project/settings.py) are configuration, not imports.
LAYERS = ("processing", "gateway", "project", "scaler", "bench")


def module_files(folders: tuple[str, ...]) -> dict[str, Path]:
    """Every module of `folders` by its dotted name (a package by its own, not its __init__)."""
    found = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """The dotted names `path` imports, at module level or inside a function: for `from a import b`,
    a.b (which is a module or a name in a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(name, path, node)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, a relative one resolved from `name`'s package."""
    if not node.level:
        return node.module
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


@functools.cache
def import_graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Each module of `folders` -> the modules of `folders` it imports."""
    modules = module_files(folders)

    def known(dotted: str) -> str | None:
        """The module `dotted` is, or is a name in (a.b.NAME -> a.b); None outside `folders`."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for name, path in modules.items():
        imported = {known(dotted) for dotted in imported_names(name, path)}
        graph[name] = imported - {None, name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Modules each importing the next and the last importing the first, or None when there are none."""
    path: list[str] = []
    finished: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module) :]
        if module in finished:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if cycle := visit(imported):
                return cycle
        path.pop()
        finished.add(module)
        return None

    return next(filter(None, (visit(module) for module in sorted(graph))), None)


def test_the_import_graph_sees_imports_inside_functions_and_finds_a_cycle():
    graph = import_graph(LAYERS)
    # Imported inside a function: middleware loads before Django's apps.
    assert "processing.worker.admission" in graph["processing.worker.middleware"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(import_graph(LAYERS))
    assert cycle is None, "an import cycle: " + " -> ".join([*cycle, cycle[0]])


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_from_the_layers_above_it_or_the_tests(layer):
    above = (*LAYERS[LAYERS.index(layer) + 1 :], "tests")
    graph = import_graph((*LAYERS, "tests"))
    upward = {
        f"{module} -> {imported}"
        for module, imports in graph.items()
        if module.split(".")[0] == layer
        for imported in imports
        if imported.split(".")[0] in above
    }
    assert sorted(upward) == []


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
