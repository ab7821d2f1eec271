"""`make chaos` in CI: every fault of the suite under load, on the full stack, and the promise held.

The faults that strike only the stack's own processes (its workers, its S3 server) run beside the
other tests. Those that stop and start this machine's PostgreSQL, RabbitMQ and Redis run `alone`;
the connections this test process holds are closed afterwards, so the tests that follow start on
fresh ones.
"""

import pytest

from bench import chaos
from tests.services import close_database_connections, require
from tests.stack import migrated_database

pytestmark = pytest.mark.services

OWN_PROCESS_FAULTS = ["worker-kill", "worker-main-kill", "s3-restart"]
SERVICE_FAULTS = [fault for fault in chaos.FAULTS if fault not in OWN_PROCESS_FAULTS]


@pytest.fixture
def fresh_connections_afterwards():
    yield
    close_database_connections()


def test_every_accepted_job_ends_when_a_worker_or_the_s3_server_dies():
    require("postgres", "rabbitmq", "redis")
    outcomes = chaos.run(OWN_PROCESS_FAULTS, jobs=30, outage=2, database_template=migrated_database())
    assert_promise_held(outcomes)


@pytest.mark.alone
def test_every_accepted_job_ends_when_postgres_rabbitmq_or_redis_restarts(fresh_connections_afterwards):
    require("postgres", "rabbitmq", "redis")
    outcomes = chaos.run(SERVICE_FAULTS, jobs=30, outage=2, database_template=migrated_database())
    assert_promise_held(outcomes)


def assert_promise_held(outcomes: list[chaos.Outcome]) -> None:
    print(chaos.report(outcomes))
    for outcome in outcomes:
        assert outcome.accepted, f"{outcome.fault}: no job was accepted"
        assert not outcome.problems(), f"{outcome.fault}: {outcome.problems()}"
    assert any(outcome.unavailable_ms for outcome in outcomes), "no fault made the gateway answer 503"
