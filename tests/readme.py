"""The README's shell blocks, run as written on a fresh copy of the repository (docs/testing.md).

A block's info string says how it runs: `sh` runs and must succeed; `sh server` starts a server
that runs until Ctrl-C (it runs in the background, the blocks after it run once
http://127.0.0.1:8000/health/live answers, and it is stopped as Ctrl-C stops it before the next
`sh server` block or at the end); `sh skip` is not run. Every block that runs shares one
`bash -euo pipefail`, so a variable one sets is there for the next, as in one terminal.

`python -m tests.readme` runs them outside pytest (PostgreSQL, RabbitMQ and Redis needed, and
port 8000 free); tests/test_readme.py runs them in the suite.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from project import config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PORT = 8000  # the README's, as a new user types it
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELLS = ("sh", "bash")
KINDS = ("run", "server", "skip")  # `sh` alone is "run"
READY_SECONDS = 300  # a first `make run` migrates and collects the static files
STOP_SECONDS = 200  # a stack's workers finish the jobs in hand first (project/stack.py)
# Make's own variables: a `make` the README runs is a first one, not one nested in `make test`.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR")


class ReadmeFailed(AssertionError):
    """A README block failed as written; the message says which and shows what it printed."""


@dataclass
class Block:
    kind: str
    commands: str
    line: int  # where it starts in the README, for messages


def shell_blocks(markdown: str) -> list[Block]:
    """The shell blocks of `markdown`, in order; an info string this module doesn't know is an error,
    so that a typo doesn't silently leave a block unrun."""
    found = []
    for fence in FENCE.finditer(markdown):
        words = fence["info"].split()
        if not words or words[0] not in SHELLS:
            continue
        kind = words[1] if len(words) > 1 else "run"
        line = markdown.count("\n", 0, fence.start()) + 1
        if kind not in KINDS or len(words) > 2:
            raise ValueError(
                f"README line {line}: unknown info string {fence['info']!r} (use sh, sh server, sh skip)"
            )
        found.append(Block(kind, fence["body"], line))
    return found


# Starts a server block in a process group of its own (setsid), as a terminal's foreground job, and
# stops it the way Ctrl-C does: SIGINT to that whole group, which must then empty in time.
HELPERS = f"""
server=
health=http://127.0.0.1:{PORT}/health/live
start_server() {{  # LINE, the block on stdin
    setsid bash -euo pipefail -c "$(cat)" > "server-$1.log" 2>&1 &
    server=$!
    for _ in $(seq {READY_SECONDS}); do
        if curl --silent --output /dev/null --max-time 2 "$health"; then return 0; fi
        if ! kill -0 "$server" 2>/dev/null; then
            echo "the server block at README line $1 ended before it served:"
            tail -n 40 "server-$1.log"; return 1
        fi
        sleep 1
    done
    echo "the server block at README line $1 did not answer in {READY_SECONDS}s"
    tail -n 40 "server-$1.log"; return 1
}}
stop_server() {{
    [ -n "$server" ] || return 0
    kill -INT -- "-$server" 2>/dev/null || true
    for _ in $(seq {STOP_SECONDS}); do
        if ! kill -0 -- "-$server" 2>/dev/null; then server=; return 0; fi
        sleep 1
    done
    echo "a server did not stop within {STOP_SECONDS}s of Ctrl-C"; kill -KILL -- "-$server"; server=; return 1
}}
trap 'stop_server || true' EXIT
"""


def script(blocks: list[Block]) -> str:
    """One bash script: every block that runs, in order, with a server block's server started
    in the background and stopped before the next one and at the end."""
    parts = ["set -euo pipefail", HELPERS]
    for block in blocks:
        if block.kind == "skip":
            continue
        parts.append(f"echo '--- README line {block.line}'")
        if block.kind == "server":
            parts.append(
                f"stop_server\nstart_server {block.line} <<'README_BLOCK'\n{block.commands}README_BLOCK"
            )
        else:
            parts.append(block.commands)
    parts.append("stop_server")
    return "\n".join(parts) + "\n"


def fresh_copy(destination: Path) -> Path:
    """The files a clone would have (those git tracks, and those it would add), and this checkout's
    .venv, so that `make` installs nothing and nothing is fetched."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to((ROOT / ".venv").resolve())
    return destination


def new_machine_environment(home: Path) -> dict[str, str]:
    """This process's environment less every Darkroom setting and make's variables: nothing set,
    as on a machine that has never run Darkroom. Every `curl` fails on an HTTP error (.curlrc)."""
    (home / ".curlrc").write_text("fail-with-body\nmax-time = 120\n")
    unset = {*config.BY_NAME, "DARKROOM_VAR_DIR", "DJANGO_SETTINGS_MODULE", "STACK_ENV", *MAKE_VARIABLES}
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    return {**environment, "CURL_HOME": str(home)}


def point_the_stack_at(copy: Path, services: dict[str, str]) -> None:
    """The copy's deploy/stack.env (what `make stack` writes .env from) with the run's own services."""
    template = copy / "deploy" / "stack.env"
    lines = template.read_text().splitlines()
    kept = [line for line in lines if line.split("=", 1)[0] not in services]
    template.write_text("\n".join([*kept, *(f"{name}={url}" for name, url in services.items())]) + "\n")


def port_is_free(port: int = PORT) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_readme(workdir: Path, services: dict[str, str], readme: Path = README) -> str:
    """Run `readme`'s shell blocks on a fresh copy in `workdir`, the full stack on `services`
    (DATABASE_URL, BROKER_URL, REDIS_URL of its own); what they printed. Raises ReadmeFailed."""
    if not port_is_free():
        raise ReadmeFailed(f"port {PORT} is taken: the README's servers need it")
    copy = fresh_copy(workdir / "darkroom")
    point_the_stack_at(copy, services)
    home = workdir / "home"
    home.mkdir()
    done = subprocess.run(
        ["bash", "-c", script(shell_blocks(readme.read_text()))],
        cwd=copy, env=new_machine_environment(home), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode != 0:
        logs = "".join(
            f"\n--- {log.name}\n{log.read_text()[-4000:]}" for log in sorted(copy.glob("server-*.log"))
        )
        raise ReadmeFailed(f"the README failed as written (exit {done.returncode}):\n{output[-6000:]}{logs}")
    return output


def main() -> int:
    import tempfile

    from tests.stack import LiveStack

    with tempfile.TemporaryDirectory() as workdir, LiveStack(Path(workdir) / "stack") as stack:
        services = {name: stack.env[name] for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")}
        try:
            print(run_readme(Path(workdir), services))
        except ReadmeFailed as failure:
            print(failure, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
