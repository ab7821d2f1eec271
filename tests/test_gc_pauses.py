"""gateway.gc_pauses in a process of its own (freezing is for a whole process): every collection
is timed into the metrics, and what survives a full collection stays out of the next ones."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER_LIKE = """
import gc, json
from prometheus_client import REGISTRY
from gateway import gc_pauses

gc_pauses.watch()
gc_pauses.freeze_what_is_loaded()
loaded = gc.get_freeze_count()
sockets = [{"socket": [n]} for n in range(50_000)]  # long-lived objects made after start-up
gc.collect()  # a full collection: they survive it
after_full = gc.get_freeze_count()
gc_pauses.record_noted()
print(json.dumps({
    "loaded": loaded,
    "after_full": after_full,
    "full_pauses": REGISTRY.get_sample_value("darkroom_gc_pause_seconds_count", {"generation": "2"}),
    "longest": REGISTRY.get_sample_value("darkroom_gc_longest_pause_seconds"),
    "tracked_now": len(gc.get_objects()),
}))
"""


def test_a_full_collection_is_timed_and_what_survives_it_is_kept_out_of_the_next():
    run = subprocess.run([sys.executable, "-c", SERVER_LIKE], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)

    assert figures["loaded"] > 10_000  # the modules imported so far
    assert figures["after_full"] >= figures["loaded"] + 100_000  # the 50,000 dicts and lists joined them
    assert figures["tracked_now"] < 10_000  # what a collection walks now: not the sockets
    assert figures["full_pauses"] >= 1 and figures["longest"] > 0
