"""Worker groups as local processes: one Dramatiq process (`--processes 1`) per group.

One Dramatiq process per group, because a Dramatiq main process shuts all its worker processes
down when one of them dies: with one each, a crash takes one group, and the scaler replaces it.

How a group stops without losing work (verified against dramatiq 2.2's cli.py and worker.py, and
by tracing deliveries in a live run):
- the scaler sends ONE SIGTERM to the group's main process, which forwards one SIGTERM to its
  worker process. That process notices within a second (it polls a flag), then stops its worker
  threads, each after the message it is processing: every job it started finishes there, once;
- never a second SIGTERM, and never to the whole process group: a worker process that gets
  SIGTERM twice exits at once ("Killing worker process..."), abandoning its jobs;
- the prefetch is the thread count, so a running worker holds only the messages its threads are
  working on. Its last acks can still let RabbitMQ deliver up to `threads` more messages before
  its consumer closes; those are never started and go back to the queue as they were (their
  jobs were never claimed: no attempt counted, nothing to redo). Dramatiq's default prefetch
  (twice the threads) would hand back more.
"""

import logging
import signal
import subprocess
from dataclasses import dataclass, field

from django.conf import settings

from processing.jobs.pools import DEFAULT_POOL
from scaler.backends.processes import (
    child_pids,
    describe_exit,
    signal_group,
    spawn,
    utc_now,
    wait_all,
    worker_command,
)

logger = logging.getLogger(__name__)


@dataclass
class WorkerGroup:
    process: subprocess.Popen
    started_at: str = field(default_factory=utc_now)
    draining_since: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> dict:
        return {
            "pid": self.pid,
            # The worker process(es) Dramatiq forked: the pid in a job's worker id.
            "worker_pids": child_pids(self.pid),
            "state": "draining" if self.draining_since else "running",
            "started_at": self.started_at,
            "draining_since": self.draining_since,
        }


def worker_environment(threads: int, pool: str) -> dict[str, str]:
    # A worker process consumes only the queues it declares, and it declares WORKER_POOL's: the pool
    # a flag chose must reach it too, or it would consume nothing.
    # Dramatiq prefetches twice its thread count by default; in-progress messages count
    # towards the prefetch, so with prefetch == threads nothing waits unstarted in the worker.
    prefetch = {"dramatiq_queue_prefetch": str(threads), "dramatiq_delay_queue_prefetch": str(threads)}
    return {"WORKER_POOL": pool, **prefetch}


class LocalWorkers:
    """Keeps `target()` worker groups of `pool` running on this machine; stopped ones drain first.

    Named after its pool, so that the scalers of two pools tell their metrics and health apart."""

    def __init__(
        self,
        threads: int,
        drain_timeout: float | None = None,
        command: list[str] | None = None,
        pool: str = DEFAULT_POOL,
    ):
        self.threads = threads
        self.name = self.pool = pool
        self.command = command or worker_command(threads, pool)
        # A draining job can't outlive its time limit; past that (plus slack) the group is stuck.
        self.drain_timeout = drain_timeout or settings.JOB_TIME_LIMIT_SECONDS + 30
        self.active: list[WorkerGroup] = []
        self.draining: list[WorkerGroup] = []

    def target(self) -> int:
        return len(self.active)

    def scale_to(self, target: int) -> None:
        while len(self.active) < target:
            self.active.append(self._start())
        while len(self.active) > target:
            self._drain(self.active.pop())  # the newest: the oldest have warm caches and connections

    def supervise(self) -> int:
        """Forget drained groups; replace crashed ones. Returns how many were replaced."""
        for group in [g for g in self.draining if g.process.poll() is not None]:
            self.draining.remove(group)
            logger.info("worker group %d drained (%s)", group.pid, describe_exit(group.process.returncode))
        crashed = [group for group in self.active if group.process.poll() is not None]
        for group in crashed:
            self.active.remove(group)
            logger.warning(
                "worker group %d exited unexpectedly (%s): replacing it",
                group.pid,
                describe_exit(group.process.returncode),
            )
            # If the main process died and not its worker, the orphaned worker stops itself after
            # its jobs in hand (processing.worker.middleware.ExitWhenOrphaned): a SIGTERM from here too
            # could be its second, which makes it exit mid-job.
            self.active.append(self._start())
        return len(crashed)

    def describe(self) -> dict:
        groups = [*self.active, *self.draining]
        return {
            "target": len(self.active),
            "running": sum(1 for g in self.active if g.process.poll() is None),
            "draining": len(self.draining),
            "threads": self.threads,
            "groups": [group.describe() for group in groups],
        }

    def shutdown(self) -> None:
        """Drain every group and wait for them; kill only what outlives the job time limit."""
        self.scale_to(0)
        left = wait_all([g.process for g in self.draining], timeout=self.drain_timeout)
        for process in left:
            logger.error("worker group %d did not drain in %ss: killing it", process.pid, self.drain_timeout)
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        self.draining.clear()

    def _start(self) -> WorkerGroup:
        process = spawn(self.command, worker_environment(self.threads, self.pool))
        logger.info("started worker group %d (%d threads)", process.pid, self.threads)
        return WorkerGroup(process)

    def _drain(self, group: WorkerGroup) -> None:
        group.process.send_signal(signal.SIGTERM)  # the main process only: see the module docstring
        group.draining_since = utc_now()
        self.draining.append(group)
        logger.info("draining worker group %d", group.pid)


class ObservedWorkers:
    """The workers as RabbitMQ sees them (consumers on the queue), for a one-off report: changes nothing."""

    def __init__(self, consumers: int, pool: str = DEFAULT_POOL):
        self.name = pool
        self.consumers = consumers
        self.wanted: int | None = None

    def target(self) -> int:
        return self.consumers

    def scale_to(self, target: int) -> None:
        self.wanted = target

    def supervise(self) -> int:
        return 0

    def describe(self) -> dict:
        return {"target": self.consumers, "observed_consumers": self.consumers, "would_scale_to": self.wanted}

    def shutdown(self) -> None:
        pass
