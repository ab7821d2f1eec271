"""The floors under issue 23's CPU goals, end to end on short runs: `make bench-api`'s upload figures
(bare views in the project's own server, against the real submission) and `make bench-worker-floor`
(a message to an actor that does nothing). What is asserted is that every figure is measured and
printed, and that nothing is left behind; never how fast anything went."""

import re
from contextlib import closing

import pika
import pytest

from bench import api, worker_floor
from bench.stack import Stack
from processing.jobs.pools import DEFAULT_POOL
from processing.jobs.queues import declared_counts
from tests.services import require, url_of
from tests.stack import migrated_database

pytestmark = pytest.mark.services


def test_the_upload_floor_measures_each_bare_view_and_the_submission_then_empties_the_queue():
    require("postgres", "rabbitmq", "redis")
    args = api.parse_args(
        ["--measure", "uploads", "--seconds", "0.5", "--connections", "2", "--clients", "1"]
    )
    with Stack(
        workers=1, threads=1, database_template=migrated_database(), REDIS_URL=url_of("redis")
    ) as stack:
        found = api.measure_uploads(stack, args)
        with closing(pika.BlockingConnection(pika.URLParameters(stack.env["BROKER_URL"]))) as connection:
            left, consumers = declared_counts(connection, DEFAULT_POOL)
    printed = api.upload_report(args, found)
    print(printed)

    assert list(found.rates) == list(api.upload_requests(b"", "multipart/form-data").keys())
    for label, rate in found.rates.items():
        assert rate.per_second > 0 and rate.errors == 0, (label, rate)
        assert rate.server_cpu_ms is not None, label
        assert re.search(rf"^{re.escape(label)}\s+\d+\s+\d+\.\d\d ms\s+0$", printed, re.M), printed
    assert found.upload_bytes > 400_000  # a 1920x1080 photo, as `make bench` uploads
    assert found.purged > 0 and (left, consumers) == (0, 0)  # no worker took the submissions; none remain
    assert "of the goal's 4 ms" in printed


def test_the_worker_floor_prints_each_workers_cpu_per_message(capsys):
    require("rabbitmq")
    worker_floor.main(["--messages", "100", "--rounds", "2"])
    printed = capsys.readouterr().out
    print(printed)

    for variant in worker_floor.WORKERS:
        row = re.search(
            rf"^{variant}\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+\d+\s+\d+\.\d\d\s", printed, re.M
        )
        assert row, printed
        low, median, high = (float(figure) for figure in row.groups())
        assert 0 < low <= median <= high
    assert "The project's worker spends" in printed and "of the 2 ms the goal" in printed
