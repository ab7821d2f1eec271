"""The garbage collector's pauses in the server: measured, exported, and kept short.

A full collection stops the event loop for as long as it takes to walk every tracked object:
with ten thousand sockets open that was 0.6–1.5 s, every live event on hold meanwhile.
Long-lived objects are moved out of its reach, as `gc.freeze()` is meant for:

- `freeze_what_is_loaded()`, once the application has loaded: Django, the URL conf, the
  models, most of a server's objects, never garbage.
- After a full collection that took FREEZE_AFTER seconds or more, from then on: what survived
  it is alive, and many: mostly open sockets, which last minutes. A socket that closes is freed
  by reference counting, frozen or not (measured: a full collection after 3,000 sockets opened
  and closed found 83 objects of garbage), so later full collections only walk what was made
  since. Not after every full collection: what is frozen is never collected as garbage, and
  requests in flight at that moment hold cycles that become garbage later (exceptions and
  their tracebacks). Freezing after each one leaked about one object a request (12,000 in a
  minute of 9,700 plain requests); freezing only when there is much to keep out leaks that
  only once per many thousand long-lived objects.
- Full collections twice as often as by default (FULL_AFTER), so that each walks less: Python
  runs one after ten middle ones, about 70,000 allocations, and with 10,000 sockets opening
  (`make bench-ws`) each walked 70,000–80,000 objects in 30–70 ms; after two, 10–16 ms.

`watch()` also times every collection through `gc.callbacks` and exports the pauses as
`darkroom_gc_pause_seconds{generation}` and the longest as `darkroom_gc_longest_pause_seconds`
(what `make bench-ws` reports). The number of frozen objects is not exported: counting them
walks them all, holding the interpreter for 10 ms a million objects, and several times that
on a server's scattered heap (it showed as a 100 ms stall in `make bench-ws`). A leak among
them would show as the process's resident memory (`process_resident_memory_bytes`). The
callback only takes notes (and freezes): it runs wherever an allocation triggers a collection,
possibly inside the metrics library holding its lock; a thread of its own records them.
"""

import gc
import threading
import time
from collections import deque

from prometheus_client import Gauge, Histogram

PAUSE_SECONDS = Histogram(
    "darkroom_gc_pause_seconds",
    "Garbage-collector pauses of the server's event loop",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LONGEST_PAUSE = Gauge(
    "darkroom_gc_longest_pause_seconds", "The longest garbage-collector pause so far", multiprocess_mode="max"
)
OLDEST = 2  # the generation a full collection collects
RECORD_EVERY = 1.0  # seconds between moving noted pauses into the metrics
FULL_AFTER = 2  # collections of the middle generation before a full one (Python's default: 10)
FREEZE_AFTER = 0.010  # seconds of a full collection that make it worth freezing what survived it

_noted: deque[tuple[int, float]] = deque(maxlen=100_000)  # (generation, seconds) not yet recorded
# The collecting thread's CPU time, not the clock's: between the callbacks that bracket a
# collection the interpreter may run another thread (the event loop, say) for a while, which
# is no pause. Collecting holds the interpreter, so its CPU time is the time others wait.
_started: list[float] = [0.0]
_longest: list[float] = [0.0]
_freezing = [False]  # whether full collections freeze what survives them (freeze_what_is_loaded)


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.thread_time()
        return
    pause = time.thread_time() - _started[0]
    _noted.append((info["generation"], pause))
    if info["generation"] == OLDEST and _freezing[0] and pause >= FREEZE_AFTER:
        # The collection is over and left only what is alive: keep it out of the next ones.
        # Now rather than a moment later, before more short-lived objects join it.
        gc.freeze()


def record_noted() -> None:
    """Move the pauses noted since the last call into the metrics."""
    while _noted:
        generation, seconds = _noted.popleft()
        PAUSE_SECONDS.labels(str(generation)).observe(seconds)
        if seconds > _longest[0]:
            _longest[0] = seconds
            LONGEST_PAUSE.set(seconds)


def record_forever() -> None:
    while True:
        time.sleep(RECORD_EVERY)
        record_noted()


def watch() -> None:
    """Time every collection in this process from now on (once, however often it is called)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
        threading.Thread(target=record_forever, name="gc-pauses", daemon=True).start()


def freeze_what_is_loaded() -> None:
    """Collect what is garbage already, keep everything alive now out of future collections, and
    from now on what survives a long full collection (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    _freezing[0] = True
    youngest, middle, _ = gc.get_threshold()
    gc.set_threshold(youngest, middle, FULL_AFTER)
