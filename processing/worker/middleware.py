"""Dramatiq middleware for jobs, and for the worker processes that run them."""

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import suppress
from types import FrameType
from typing import TYPE_CHECKING, Any

from django import db
from django_dramatiq.middleware import DbConnectionsMiddleware
from dramatiq import Broker, Message, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.compat import StreamablePipe
from dramatiq.errors import BrokerConnectionError
from dramatiq.worker import ConsumerThread, WorkerThread

if TYPE_CHECKING:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

from processing.jobs.pools import CALLBACK_QUEUE

logger = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 0.5  # how soon a worker process notices that its main process is gone
REFUSED = 2  # a worker process's exit status for a bad command line, as dramatiq.cli's RET_IMPORT


class KeepDbConnections(DbConnectionsMiddleware):  # type: ignore[misc]  # django-dramatiq ships no types
    """A worker thread keeps its database connection from one message to the next, and closes it only
    when it is broken or left in a transaction; at shutdown every connection is closed, as before.

    The connections come from a pool (CONN_MAX_AGE 0, for the server's short-lived request threads),
    so Django's own clean-up would give the thread's connection back after every message and take
    one again for the next: half a millisecond of a worker's CPU per job, for a worker thread that
    lives as long as its process. A connection that the database dropped fails the job's next
    statement, which is retried (a transient error) after it was closed here.
    """

    def _close_broken_connections(self, *args: Any, **kwargs: Any) -> None:
        for connection in db.connections.all(initialized_only=True):
            if connection.connection is None:
                continue
            left_in_transaction = connection.in_atomic_block or (
                connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]
            )
            if left_in_transaction or (connection.errors_occurred and not connection.is_usable()):
                connection.close()
            else:
                connection.errors_occurred = False

    before_process_message = _close_broken_connections
    after_process_message = _close_broken_connections


class FailJobWhenMessageDies(Middleware):
    """When a message is given up on (retries exhausted, or a `throws` error), fail its job with the reason.

    Unless a live worker other than this one holds the job: a duplicate message that waited out
    its lease waits in vain while that worker is still at it, and the job is that worker's to finish.
    The message itself goes to the dead-letter queue, where operators can inspect and re-publish it.
    """

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed or message.actor_name != "process_job":
            return
        from processing.jobs import lifecycle  # imported late: middleware loads before Django's apps

        job_id = message.args[0]
        code, reason = describe(exception)
        # This thread ran the actor: its worker id is the one the job's lease names, if it claimed it.
        if not lifecycle.fail_unless_held_elsewhere(job_id, code, reason, lifecycle.worker_id()):
            logger.info("message given up on, but its job is finished or held by a live worker")


def describe(exception: BaseException) -> tuple[str, str]:
    from dramatiq import Retry
    from dramatiq.middleware import TimeLimitExceeded

    if isinstance(exception, TimeLimitExceeded):
        return "time_limit_exceeded", "processing took longer than the time limit"
    if isinstance(exception, Retry):
        return "worker_lost", "the job stayed held by a worker that never finished it"
    return "processing_error", f"gave up after repeated errors: {exception.__class__.__name__}: {exception}"


class RefuseToConsumeNothing(Middleware):
    """A worker consumes only the queues its process declares (processing.worker.actors.declare_pools,
    from WORKER_POOL and TRAFFIC_SPLIT): one whose `--queues` names none of them would say it is
    ready and take no job (the callbacks' queue alone, which every worker consumes, is no pool), so it
    stops at start instead, saying why.

    By SystemExit: Dramatiq logs and swallows an Exception from a middleware, and would start anyway.
    """

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if any(q_name(queue) != CALLBACK_QUEUE for queue in worker.consumers):
            return
        worker.stop()
        asked = ", ".join(sorted(set(worker.consumer_whitelist or ()) - {CALLBACK_QUEUE})) or "every queue"
        declared = ", ".join(sorted(broker.get_declared_queues())) or "none"
        logger.critical(
            "this worker would consume nothing: it was asked for %s, and its process declares %s. "
            "Set WORKER_POOL to the pool (run_workers --pool does) or name it in TRAFFIC_SPLIT.",
            asked,
            declared,
        )
        raise SystemExit(REFUSED)


class ReuseFreedMemory(Middleware):
    """A worker process keeps what its jobs free for the next ones (admission.keep_freed_memory)."""

    def after_process_boot(self, broker: Broker) -> None:
        if multiprocessing.parent_process() is None:
            return  # not a forked worker process: the embedded workers share the server's memory
        from processing.worker import admission  # imported late: middleware loads before Django's apps

        admission.keep_freed_memory()


class ExitWhenOrphaned(Middleware):
    """A worker process that Dramatiq's main process forked logs without it, and stops when it is gone.

    Dramatiq sends a worker process's log lines through a pipe that its main process reads. Once
    the main process is killed nobody reads it, yet writing never fails: the worker holds the pipe's
    read end itself, inherited at the fork. When 64 KiB of lines have filled it, the next log call
    blocks forever holding the logging lock, every worker thread that logs blocks behind it with the
    message it holds, and the consumer thread keeps the RabbitMQ consumer open: messages ready,
    consumers present, no progress. (A dead Redis only hastens it: it makes warnings to log.)

    So the process writes its log lines to the stderr it inherited, where the main process would
    have copied them, and a thread watching its parent stops it when the parent is gone, the way
    the main process would have: with one SIGTERM, after which Dramatiq finishes the jobs in hand,
    gives back the messages it holds and exits; its supervisor has started a replacement meanwhile.
    """

    def after_process_boot(self, broker: Broker) -> None:
        parent = multiprocessing.parent_process()
        if parent is None or threading.current_thread() is not threading.main_thread():
            return  # not a forked worker process: the embedded workers run in the server's own process
        log_to_inherited_stderr()
        stopping = note_stop_signals()
        watcher = threading.Thread(
            target=stop_when_orphaned, args=(parent.pid, stopping), name="parent-watch", daemon=True
        )
        watcher.start()


def log_to_inherited_stderr() -> None:
    """Point every handler (and print) that writes into Dramatiq's log pipe at this process's own stderr."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for each in loggers:
        for handler in getattr(each, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and isinstance(handler.stream, StreamablePipe):
                handler.setStream(sys.__stderr__)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


def note_stop_signals() -> threading.Event:
    """An event set by the first SIGTERM, whoever sends it; Dramatiq's own handler still runs.

    A Dramatiq worker process that gets a second SIGTERM exits at once, mid-job: the watcher
    must not add one to a stop that has begun.
    """
    stopping = threading.Event()
    dramatiqs = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if callable(dramatiqs):
            dramatiqs(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return stopping


def stop_when_orphaned(parent_pid: int, stopping: threading.Event) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    if stopping.is_set():
        return  # already stopping: the jobs in hand finish, then the process exits
    logger.warning("main process %d is gone: stopping after the jobs in hand", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


class NoIdleBrokerConnections(Middleware):
    """A worker's threads keep no RabbitMQ connection open that nothing services.

    Dramatiq gives every thread a connection of its own to publish on: a consumer thread's declares
    its queue before it consumes (on a second connection), and later publishes delayed messages
    that come due; a worker thread's publishes a retry. Only a thread that uses its connection sends
    that connection's heartbeats, so an idle one misses them, RabbitMQ drops it after a few minutes,
    and the drain at shutdown, closing it again, logged about eight of pika's errors per worker
    process (a lost stream, a close on a closed connection). Publishing is rare in a worker, so
    each such connection is closed as soon as it has done its work, and opened again when needed.
    """

    def after_consumer_thread_boot(self, broker: Broker, thread: ConsumerThread) -> None:
        rabbitmq = as_rabbitmq(broker)
        if rabbitmq is None:
            return
        # What consume() does first, here, so that the connection it would have left open can be closed.
        with suppress(BrokerConnectionError):  # RabbitMQ down: the consumer retries, as it would have
            rabbitmq.declare_queue(thread.queue_name, ensure=True)
        del rabbitmq.connection  # the calling thread's

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if not isinstance(threading.current_thread(), ConsumerThread | WorkerThread):
            return  # a server's or a command's publishing thread: it publishes often, and keeps it
        rabbitmq = as_rabbitmq(broker)
        if rabbitmq is not None:
            del rabbitmq.connection  # the calling thread's


def as_rabbitmq(broker: Broker) -> "RabbitmqBroker | None":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # here: pika is 70 ms of every embedded start

    return broker if isinstance(broker, RabbitmqBroker) else None
