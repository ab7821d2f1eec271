"""`make chaos` in CI, the faults that stop and start PostgreSQL, RabbitMQ and Redis: they strike
servers of the test's own (bench/private_services.py), so the tests running beside it are untouched."""

import pytest

from bench import chaos
from tests.test_chaos import ANSWERED_503_MS, OWN_PROCESS_FAULTS, assert_promise_held

pytestmark = pytest.mark.services

SERVICE_FAULTS = [fault for fault in chaos.FAULTS if fault not in OWN_PROCESS_FAULTS]


def test_every_accepted_job_ends_when_postgres_rabbitmq_or_redis_restarts(private_services):
    # migrated afresh in the private PostgreSQL
    outcomes = chaos.run(SERVICE_FAULTS, jobs=30, outage=2, fast_503_ms=ANSWERED_503_MS)
    assert_promise_held(outcomes)
