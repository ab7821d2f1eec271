"""`make bench-worker-floor`: what one Dramatiq message costs a worker process when its actor does
nothing, the floor under issue 23's goal for the workers (their CPU per job at most the raw Pillow
loop's per image + 2 ms).

For each worker compared, one `dramatiq` process of 1 process x 1 thread (as `make bench` runs its
workers) consumes a private queue in a RabbitMQ vhost of its own, where an actor that does nothing
waits (bench/floor_actors.py). After a warm-up, each round publishes --messages messages and waits
for the last one to be done; the worker's CPU (its main process and the process it forks, from
/proc) over the round, divided by the messages, is its CPU per message. The workers compared:

- project: the project's worker process, Django set up, the project's broker settings and Dramatiq
  middleware (project/settings.py), its actors loaded;
- dramatiq: Dramatiq's RabbitMQ broker with its own default middleware, no Django;
- bare: the same broker with no middleware at all.

The messages are published by this process as the gateway publishes a job's (persistent), but
without publisher confirms, so faster than a worker takes them: a next message is always waiting,
as it is for a worker of `make bench` under load. Also printed: the worker's CPU while idle, per second.

    python -m bench.worker_floor [--messages 2000] [--rounds 5] [--variants project,dramatiq,bare]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pika
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.floor_actors import ACTOR, QUEUE
from bench.pipeline import WORKER_EXTRA_GOAL, OtherLoad
from bench.stack import StackError, StartedOrCleanedUp, rabbitmqctl, stop_side_by_side, with_path
from processing.jobs.queues import declared_counts
from scaler.backends.processes import ROOT

# Each worker compared: the function of bench.floor_actors that sets its broker, and what it is.
WORKERS = {
    "project": ("project_worker", "the project's worker: Django, its broker settings, middleware and actors"),
    "dramatiq": ("dramatiq_defaults", "Dramatiq's RabbitMQ broker and default middleware, no Django"),
    "bare": ("no_middleware", "Dramatiq's RabbitMQ broker, no middleware"),
}
WARM_UP_MESSAGES = 200
IDLE_S = 3.0  # how long the idle worker is watched (/proc counts CPU time in 10 ms ticks)
ROUND_TIMEOUT_S = 300


class PrivateVhost(StartedOrCleanedUp):
    """`with PrivateVhost() as vhost:` a RabbitMQ vhost of its own at `vhost.url`, deleted on exit."""

    def __init__(self):
        self.name = f"darkroom_floor_{uuid.uuid4().hex[:8]}"
        self.url = with_path("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672", f"/{self.name}")

    def _start(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def __exit__(self, *exc_info) -> None:
        rabbitmqctl("delete_vhost", self.name, check=False)


class FloorWorker(StartedOrCleanedUp):
    """`with FloorWorker(worker, broker_url, folder) as process:` one `dramatiq` process (1 x 1 thread)
    consuming the private queue with `worker`'s broker, once it consumes; stopped on exit."""

    def __init__(self, worker: str, broker_url: str, folder: Path):
        self.worker, self.broker_url, self.folder = worker, broker_url, folder
        self.log = folder / f"{worker}.log"
        self.process: subprocess.Popen | None = None

    def _start(self) -> None:
        function = WORKERS[self.worker][0]
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "--path",
            str(ROOT),
            "--processes",
            "1",
            "--threads",
            "1",
        ]
        command += [f"bench.floor_actors:{function}", "--queues", QUEUE]
        env = {
            **os.environ,
            "BROKER_URL": self.broker_url,
            "DEBUG": "false",  # as the benchmark's stack runs
            "DARKROOM_VAR_DIR": str(self.folder),
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.wait_until_consuming()

    def wait_until_consuming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with closing(pika.BlockingConnection(pika.URLParameters(self.broker_url))) as connection:
            while declared_counts(connection, QUEUE)[1] < 1:
                self.check_running()
                if time.monotonic() > deadline:
                    raise StackError(f"the {self.worker} worker did not consume within {timeout:g}s")
                time.sleep(0.2)

    def check_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise StackError(f"the {self.worker} worker exited:\n{tail}")

    @property
    def group(self) -> int:
        assert self.process is not None
        return self.process.pid  # its session's, and so its process group's: the forked process is in it

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            # The main process only: it stops its worker process itself.
            stop_side_by_side(
                [self.process], lambda process: os.kill(process.pid, signal.SIGTERM), timeout=15
            )


class Publisher:
    """Publishes the actor's messages on the private queue, as the gateway publishes a job's."""

    def __init__(self, broker_url: str, folder: Path):
        # Without publisher confirms, which would hold each message to a round trip: published faster
        # than a worker takes them. Confirms change nothing a consumer receives.
        self.broker = RabbitmqBroker(url=broker_url, confirm_delivery=False, middleware=[])
        # Declared now, as the worker will (same arguments): until it consumes, it has no consumer.
        self.broker.declare_queue(QUEUE, ensure=True)
        self.folder = folder

    def round(self, messages: int, worker: FloorWorker) -> float:
        """`messages` messages, the last one leaving a marker; returns once the worker has done them
        all, the seconds that took."""
        marker = self.folder / f"round-{uuid.uuid4().hex}"
        started = time.monotonic()
        for number in range(messages):
            last = number == messages - 1
            self.broker.enqueue(Message(QUEUE, ACTOR, (), {"marker": str(marker)} if last else {}, {}))
        while not marker.exists():
            worker.check_running()
            if time.monotonic() - started > ROUND_TIMEOUT_S:
                raise StackError(f"the worker did not finish {messages} messages in {ROUND_TIMEOUT_S}s")
            time.sleep(0.005)
        return time.monotonic() - started

    def close(self) -> None:
        self.broker.close()


@dataclass(frozen=True)
class Figures:
    """One worker's: its CPU ms per message in each round, messages/s in each, idle CPU ms per second."""

    per_message_ms: list[float]
    per_second: list[float]
    idle_ms_per_s: float | None


def measure(worker: str, broker_url: str, messages: int, rounds: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="darkroom_floor_") as folder:
        publisher = Publisher(broker_url, Path(folder))
        try:
            with FloorWorker(worker, broker_url, Path(folder)) as process:
                publisher.round(WARM_UP_MESSAGES, process)
                with OtherLoad({process.group: "workers"}) as idle:
                    time.sleep(IDLE_S)
                per_message, per_second = [], []
                for _ in range(rounds):
                    with OtherLoad({process.group: "workers"}) as load:
                        seconds = publisher.round(messages, process)
                    if load.cpu_s is not None:
                        per_message.append(load.cpu_s["workers"] * 1000 / messages)
                    per_second.append(messages / seconds)
        finally:
            publisher.close()
    idle_ms = idle.cpu_s["workers"] * 1000 / IDLE_S if idle.cpu_s is not None else None
    return Figures(per_message, per_second, idle_ms)


def report(args: argparse.Namespace, found: dict[str, Figures]) -> str:
    lines = [
        f"Worker CPU per message, an actor that does nothing: 1 process x 1 thread, {args.messages} messages "
        f"a round, {args.rounds} rounds (min / median / max of the rounds)",
        f"{'worker':10} {'min':>6} {'median':>7} {'max':>6} {'messages/s':>11} {'idle ms/s':>10}  what runs",
    ]
    for worker, figures in found.items():
        cpu = figures.per_message_ms
        spread = (
            f"{min(cpu):6.3f} {statistics.median(cpu):7.3f} {max(cpu):6.3f}"
            if cpu
            else f"{'?':>6} {'?':>7} {'?':>6}"
        )
        rate = statistics.median(figures.per_second)
        idle = f"{figures.idle_ms_per_s:10.2f}" if figures.idle_ms_per_s is not None else f"{'?':>10}"
        lines.append(f"{worker:10} {spread} {rate:11.0f} {idle}  {WORKERS[worker][1]}")
    if found.get("project") and found["project"].per_message_ms:
        floor = statistics.median(found["project"].per_message_ms)
        lines.append(
            f"\nThe project's worker spends {floor:.3f} ms of CPU on a message before its actor does "
            f"anything: {floor / WORKER_EXTRA_GOAL.limit:.0%} of the {WORKER_EXTRA_GOAL.limit:g} ms the goal "
            "allows the workers beyond the raw loop's per image (median of the rounds)."
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants", default=",".join(WORKERS), type=worker_list, help="the workers compared"
    )
    return parser.parse_args(argv)


def worker_list(raw: str) -> list[str]:
    chosen = [name for name in raw.split(",") if name]
    if not chosen or set(chosen) - set(WORKERS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(WORKERS)}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with PrivateVhost() as vhost:
        found = {worker: measure(worker, vhost.url, args.messages, args.rounds) for worker in args.variants}
    print(report(args, found))


if __name__ == "__main__":
    main()
