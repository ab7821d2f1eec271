"""Where a benchmark's CPU goes inside the stack's Python processes: `make bench BENCH_ARGS="--profile DIR"`.

py-spy samples the server and each worker process during the timed run, from outside (nothing in
the stack changes for it), and writes, per process, its stacks in the collapsed format (one line a
stack: frames separated by ";", then the sample count) to DIR, where a flame graph tool reads them.
`summary` turns one such file into the functions that held the most samples, inclusive and self.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100  # samples a second: py-spy's default, a few percent of a core
OURS = ("gateway/", "processing/", "project/", "scaler/")  # the inclusive list names only our functions
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class ProfilerMissing(Exception):
    """py-spy is not installed (requirements-dev.txt pins it)."""


@dataclass
class Profiler:
    """`with Profiler(folder, {"server": [pid], "worker": [pid, pid]}):` samples them until the block ends."""

    folder: Path
    targets: dict[str, list[int]]
    recorders: list[subprocess.Popen] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    def __enter__(self) -> "Profiler":
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if spy is None:
            raise ProfilerMissing("py-spy is not installed: pip install -r requirements-dev.txt")
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind, pids in self.targets.items():
            for pid in pids:
                output = self.folder / f"{kind}-{pid}.txt"
                command = [spy, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"]
                self.recorders.append(
                    subprocess.Popen(
                        [*command, "--output", str(output), "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                self.outputs[f"{kind} {pid}"] = output
        return self

    def __exit__(self, *exc_info) -> None:
        for recorder in self.recorders:  # py-spy writes its file when interrupted
            recorder.send_signal(signal.SIGINT)
        for recorder in self.recorders:
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


def frame_name(frame: str) -> str:
    """`function (path:line)` as `function (path)`, the path from the package on (site-packages or ours)."""
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found["file"].split("site-packages/")[-1]
    path = path.split(f"{Path.cwd()}/")[-1]
    return f"{found['function']} ({path})"


def name_is_ours(name: str) -> bool:
    return any(f"({package}" in name for package in OURS)


def summary(path: Path, top: int = 12) -> str:
    """Our `top` functions by inclusive share of the samples, then any function by self share."""
    inclusive, own = collections.Counter(), collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        own[frames[-1]] += int(count)
    if not total:
        return f"  {path.name}: no samples"
    ours = [(name, n) for name, n in inclusive.most_common() if name_is_ours(name)][:top]
    lines = [f"  {path.name}: {total} samples; inclusive, our code"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in ours]
    lines.append("  self")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)
