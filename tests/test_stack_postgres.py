"""The end to end on dagster-postgres storage, as in production: a database created for this
test on the machine's PostgreSQL (dropped after), a real daemon and webserver on it; the run
history the webserver reads back through GraphQL is the one in PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa

from queue_pipelines import tags
from resources import RedisResource
from tests.conftest import scratch_database
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import charges_by_key, enqueue_payments, intake_left

pytestmark = pytest.mark.stack


@pytest.fixture
def dagster_database(postgres_server_url):
    with scratch_database(postgres_server_url, "qp_stack") as url:
        yield url


@pytest.fixture
def stack_prefix(redis_url):
    prefix = f"qptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def test_end_to_end_on_postgres_storage(
    tmp_path, dagster_database, redis_url, stack_prefix, localstripe_url, mail_sink, tenant
):
    intake = RedisResource(url=redis_url, key_prefix=stack_prefix).intake()
    keys = [f"pg-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    with dagster_stack(
        tmp_path,
        redis_url=redis_url,
        key_prefix=stack_prefix,
        stripe_url=localstripe_url,
        smtp_port=mail_sink.port,
        postgres_url=dagster_database,
    ) as stack:
        enqueue_payments(redis_url, stack_prefix, tenant, keys)

        def settled():
            runs = stack.runs({tags.TENANT: tenant})
            done = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
            return done and intake_left(intake, "payment") == (0, 0) and runs

        runs = wait_until(settled, 600, "the payments to be run and acked", interval=2, stack=stack)

    assert {r["status"] for r in runs} == {"SUCCESS"}
    assert all(r["tags"][tags.JOB_TYPE] == "payment" for r in runs)
    assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}
    assert intake.dead_letters() == []
    # The history the webserver served is PostgreSQL's: the same runs, with their tags.
    engine = sa.create_engine(dagster_database)
    with engine.connect() as conn:
        stored = set(
            conn.execute(
                sa.text("SELECT run_id FROM run_tags WHERE key = :key AND value = :value"),
                {"key": tags.TENANT, "value": tenant},
            ).scalars()
        )
    engine.dispose()
    assert stored == {r["runId"] for r in runs}
