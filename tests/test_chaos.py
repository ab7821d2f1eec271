"""`make chaos` in CI: every fault of the suite under load, on the full stack, and the promise held.

It stops and starts this machine's PostgreSQL, RabbitMQ and Redis; the connections this test
process holds are closed afterwards, so the tests that follow start on fresh ones.
"""

import pytest
from django.db import connections

from bench import chaos
from tests.services import require

pytestmark = [pytest.mark.services, pytest.mark.alone]


@pytest.fixture
def fresh_connections_afterwards():
    yield
    for connection in connections.all():
        connection.close()
        if hasattr(connection, "close_pool"):
            connection.close_pool()


def test_every_accepted_job_ends_through_every_fault(fresh_connections_afterwards):
    require("postgres", "rabbitmq", "redis")

    outcomes = chaos.run(list(chaos.FAULTS), jobs=30)

    print(chaos.report(outcomes))
    for outcome in outcomes:
        assert outcome.accepted, f"{outcome.fault}: no job was accepted"
        assert not outcome.problems(), f"{outcome.fault}: {outcome.problems()}"
    assert any(outcome.unavailable_ms for outcome in outcomes), "no fault made the gateway answer 503"
