"""processing.worker.middleware.ExitWhenOrphaned: what a Dramatiq worker process does at boot."""

import logging
import multiprocessing
import sys
import threading

import pytest
from dramatiq.compat import StreamablePipe

from processing.worker.middleware import ExitWhenOrphaned, log_to_inherited_stderr


@pytest.fixture
def piped_logger():
    """A logger writing into a pipe, as Dramatiq sets up its worker processes' logging."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    handler = logging.StreamHandler(StreamablePipe(writer))
    log = logging.getLogger("tests.piped")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    reader.close()
    writer.close()


def test_log_lines_no_longer_go_through_the_pipe_that_a_dead_main_process_would_never_drain(
    piped_logger, monkeypatch
):
    monkeypatch.setattr(sys, "stderr", piped_logger.stream)
    log_to_inherited_stderr()
    assert piped_logger.stream is sys.__stderr__
    assert sys.stderr is sys.__stderr__


def test_a_process_no_multiprocessing_parent_started_is_left_alone(piped_logger):
    assert multiprocessing.parent_process() is None  # the test process, like the embedded server
    ExitWhenOrphaned().after_process_boot(None)
    assert isinstance(piped_logger.stream, StreamablePipe)
    assert "parent-watch" not in {thread.name for thread in threading.enumerate()}
