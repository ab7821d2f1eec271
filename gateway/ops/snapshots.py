"""Costly readings that anyone may ask for, taken at most once a moment per process.

`/health/ready` and `/api/v1/queue/status` are cheap to ask and costly to answer: a database
query, a broker connection, a request to RabbitMQ's management API, a Redis SCAN, an S3 request.
Anyone can ask in a loop. A `Snapshot` takes its reading at most once per FRESH_SECONDS in a
process, in one thread while the others wait for it and then share it, so that a flood of requests
costs the dependencies what one request every FRESH_SECONDS would.
"""

import threading
import time
import weakref
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

# Long enough to absorb a flood, short enough that a probe or a dashboard sees a change at once.
FRESH_SECONDS = 2.0

T = TypeVar("T")

clock = time.monotonic


class Snapshot(Generic[T]):
    """The last result of `read`, taken anew once it is FRESH_SECONDS old. A reading that raises is
    not kept: the next caller reads again."""

    every: ClassVar[weakref.WeakSet["Snapshot[object]"]] = weakref.WeakSet()

    def __init__(self, read: Callable[[], T], fresh_seconds: float = FRESH_SECONDS) -> None:
        self.read = read
        self.fresh_seconds = fresh_seconds
        self.lock = threading.Lock()
        self.kept: tuple[float, T] | None = None  # (when it was taken, by clock(); the reading)
        Snapshot.every.add(self)  # type: ignore[arg-type]  # a Snapshot[T] is a Snapshot[object] to read

    def get(self) -> T:
        with self.lock:
            if self.kept is None or clock() - self.kept[0] >= self.fresh_seconds:
                reading = self.read()
                self.kept = (clock(), reading)
            return self.kept[1]

    def forget(self) -> None:
        with self.lock:
            self.kept = None

    @classmethod
    def forget_all(cls) -> None:
        """Every snapshot reads anew next time (tests: each starts from the state it arranges)."""
        for snapshot in list(cls.every):
            snapshot.forget()
