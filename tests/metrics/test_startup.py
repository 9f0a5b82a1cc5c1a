"""The metrics' start-up does not re-read the run history (issue 12): the totals and their
cursor are stored in the Dagster instance, a new reader starts from them, and runs purged
from storage stay counted. On a PostgreSQL database of this module's own, as in production.
How long a start takes on 10,000 runs is measured by bench/metrics_startup.py, not here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pytest

from queue_pipelines.gateway.health import HealthChecks
from queue_pipelines.jobs.batch import outcome_table
from queue_pipelines.metrics.run_totals import STATE_KEY, RunTotals
from queue_pipelines.request_runner import FAILED, SUCCEEDED, ItemResult
from tests.conftest import postgres_instance


@pytest.fixture
def fresh_instance(postgres_server_url) -> Iterator[dg.DagsterInstance]:
    with postgres_instance(postgres_server_url, "qp_mstart") as instance:
        yield instance


@dg.op(config_schema={"amount": int, "decline": bool})
def charge_payment(context):
    """A batch of one, reported the way the real payment_job reports it (its outcomes table)."""
    key = f"payment:t:{context.run_id}"
    if context.op_config["decline"]:
        result = ItemResult(key, FAILED, reason="card declined", code="card_declined")
    else:
        summary = {"charged": "now", "payment_status": "succeeded", "currency": "eur"}
        result = ItemResult(key, SUCCEEDED, {**summary, "amount": context.op_config["amount"]})
    return dg.Output(None, metadata={"outcomes": outcome_table("payment", [result])})


@dg.job(tags={"queue/job_type": "payment"})
def payment_job():
    charge_payment()


def pay(instance: dg.DagsterInstance, amount: int, decline: bool = False) -> str:
    result = payment_job.execute_in_process(
        run_config={"ops": {"charge_payment": {"config": {"amount": amount, "decline": decline}}}},
        instance=instance,
        raise_on_error=False,
    )
    return result.run_id


def counts(totals) -> tuple:
    return (
        dict(totals.runs),
        dict(totals.family("payments")),
        dict(totals.family("payment_amounts")),
        dict(totals.failures),
        totals.durations["payment"].count if "payment" in totals.durations else 0,
    )


def test_a_restarted_reader_starts_from_stored_totals_and_keeps_purged_runs(fresh_instance):
    instance = fresh_instance
    run_ids = [pay(instance, 100 * (i + 1)) for i in range(5)] + [pay(instance, 1, decline=True)]
    first = RunTotals(instance)
    before = counts(first.refresh())
    assert before == (
        {("payment", "success"): 6},  # a declined card fails its request, not the run
        {("eur", "succeeded"): 5, ("unknown", "failed"): 1},
        {"eur": 1500},
        {},
        6,
    )

    # Retention purges every one of those runs: nothing is left to re-read.
    for run_id in run_ids:
        instance.delete_run(run_id)
    assert instance.get_runs_count() == 0

    restarted = RunTotals(instance)
    assert not restarted.warm
    restarted.load()
    assert restarted.warm
    assert counts(restarted.totals) == before  # from the stored value alone
    assert counts(restarted.refresh()) == before  # nothing ended since: nothing added

    pay(instance, 700)
    after = counts(restarted.refresh())
    assert after[0] == {("payment", "success"): 7}
    assert after[2] == {"eur": 2200}
    # ... and the stored value moved with it.
    assert counts(RunTotals(instance).refresh()) == after


def test_two_replicas_saving_in_turn_never_count_a_run_twice(fresh_instance):
    instance = fresh_instance
    a, b = RunTotals(instance), RunTotals(instance)
    a.load()
    b.load()
    pay(instance, 10)
    pay(instance, 20)
    a.refresh()  # saves two runs
    pay(instance, 30)
    b.refresh()  # loaded before any run: counts all three itself and saves
    a.refresh()  # counts the third and saves over b's value
    pay(instance, 40)
    b.refresh()
    for reader in (a, b, RunTotals(instance)):
        totals = reader.refresh()
        assert totals.runs[("payment", "success")] == 4
        assert totals.family("payment_amounts")["eur"] == 100


def test_the_cursor_stays_small_as_runs_settle(fresh_instance):
    """Events older than the overlap fold into the cursor's floor, so the stored value does
    not grow with the history."""
    instance = fresh_instance
    for i in range(4):
        pay(instance, i + 1)
    keeping = RunTotals(instance)  # 5 minutes of overlap: the four are still recent
    keeping.refresh()
    assert len(keeping.cursor.recent) == 4

    settled = RunTotals(instance, overlap=timedelta(0))
    settled.refresh()
    stored = json.loads(instance.daemon_cursor_storage.get_cursor_values({STATE_KEY})[STATE_KEY])
    assert stored["cursor"]["recent"] == []
    assert stored["cursor"]["floor"] > 0
    assert settled.refresh().runs[("payment", "success")] == 4


def test_a_burst_within_the_overlap_keeps_the_cursor_bounded(fresh_instance):
    instance = fresh_instance
    for i in range(5):
        pay(instance, i + 1)
    totals = RunTotals(instance, recent_cap=2)  # all five ended within the 5-minute overlap
    assert totals.refresh().runs[("payment", "success")] == 5
    assert len(totals.cursor.recent) == 2
    assert totals.cursor.floor < min(totals.cursor.recent)
    pay(instance, 6)
    assert RunTotals(instance, recent_cap=2).refresh().runs[("payment", "success")] == 6


def test_a_backlog_is_read_a_page_at_a_time(fresh_instance):
    instance = fresh_instance
    for i in range(5):
        pay(instance, i + 1)
    totals = RunTotals(instance, page_size=2)
    assert totals.refresh(max_pages=1).runs[("payment", "success")] == 2
    assert not totals.caught_up
    assert totals.refresh(max_pages=1).runs[("payment", "success")] == 4
    assert totals.refresh().runs[("payment", "success")] == 5
    assert totals.caught_up


def test_startup_probe_waits_for_the_stored_totals_only(fresh_instance, redis_url):
    import redis

    instance = fresh_instance
    pay(instance, 5)
    RunTotals(instance).refresh()  # a previous gateway process stored its totals
    pay(instance, 6)  # ended since: counted after start-up, not before
    reader = RunTotals(instance)
    health = HealthChecks(redis.Redis.from_url(redis_url), instance)
    try:
        assert health.startup(reader.warm)[0] is False
        reader.load()
        ok, body = health.startup(reader.warm)
        assert ok, body
        assert not reader.caught_up
        assert reader.refresh().runs[("payment", "success")] == 2
    finally:
        health.close()
