"""gateway.live.gc_pauses in a process of its own (freezing is for a whole process): every collection
is timed into the metrics, and what survives a long full collection stays out of the next ones."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER_LIKE = """
import gc, json
from prometheus_client import REGISTRY
from gateway.live import gc_pauses

gc_pauses.watch()
gc_pauses.freeze_what_is_loaded()
loaded = gc.get_freeze_count()
requests = [{"request": [n]} for n in range(500)]  # a few objects made after start-up
gc.collect()  # a full collection, and a short one: what survives it stays collectable
after_short = gc.get_freeze_count()
gc_pauses.FREEZE_AFTER = 0  # as long a collection as walking ten thousand sockets takes
sockets = [{"socket": [n]} for n in range(50_000)]
gc.collect()
after_long = gc.get_freeze_count()
gc_pauses.record_noted()
print(json.dumps({
    "loaded": loaded,
    "after_short": after_short,
    "after_long": after_long,
    "full_pauses": REGISTRY.get_sample_value("darkroom_gc_pause_seconds_count", {"generation": "2"}),
    "longest": REGISTRY.get_sample_value("darkroom_gc_longest_pause_seconds"),
    "tracked_now": len(gc.get_objects()),
}))
"""


def test_collections_are_timed_and_what_survives_a_long_full_one_is_kept_out_of_the_next():
    run = subprocess.run([sys.executable, "-c", SERVER_LIKE], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)

    assert figures["loaded"] > 10_000  # the modules imported so far
    assert figures["after_short"] == figures["loaded"]  # nothing frozen after a short collection
    assert figures["after_long"] >= figures["loaded"] + 100_000  # the 50,000 dicts and lists joined
    assert figures["tracked_now"] < 10_000  # what a collection walks now: not the sockets
    assert figures["full_pauses"] >= 2 and figures["longest"] > 0
