"""Run retention (issue 12): deploy/k8s/purge_runs.py, the purge-runs CronJob's script,
deletes finished runs older than the retention period and nothing else. On PostgreSQL, as in
production."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from queue_pipelines.metrics.run_totals import RunTotals
from tests.conftest import postgres_instance

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "purge_runs.py"
spec = importlib.util.spec_from_file_location("purge_runs", SCRIPT)
purge_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(purge_runs)


@pytest.fixture
def instance(postgres_server_url) -> Iterator[dg.DagsterInstance]:
    with postgres_instance(postgres_server_url, "qp_purge") as test_instance:
        yield test_instance


@dg.op
def charge(_context):
    return dg.Output(1, metadata={"amount": 100, "currency": "usd", "status": "succeeded"})


@dg.job(tags={"queue/job_type": "payment"})
def payment_job():
    charge()


def test_finished_runs_past_retention_go_and_the_rest_stay(instance):
    finished = [payment_job.execute_in_process(instance=instance).run_id for _ in range(3)]
    in_flight = create_run_for_test(
        instance, job_name="payment_job", status=dg.DagsterRunStatus.STARTED
    ).run_id
    starting = create_run_for_test(
        instance, job_name="payment_job", status=dg.DagsterRunStatus.STARTING
    ).run_id
    totals = RunTotals(instance)
    assert totals.refresh().runs[("payment", "success")] == 3
    ninety = timedelta(days=90)

    # Today every run is younger than 90 days: nothing goes.
    assert purge_runs.purge_finished_runs(instance, ninety) == 0
    assert instance.get_runs_count() == 5

    # 100 days on: the finished runs are past retention; a dry run only counts them.
    later = datetime.now(UTC) + timedelta(days=100)
    assert purge_runs.purge_finished_runs(instance, ninety, dry_run=True, now=later) == 3
    assert instance.get_runs_count() == 5
    assert purge_runs.purge_finished_runs(instance, ninety, now=later, batch=2) == 3
    remaining = {run.run_id for run in instance.get_runs()}
    assert remaining == {in_flight, starting}
    for run_id in finished:
        assert instance.get_records_for_run(run_id).records == []  # event logs went too

    # The metrics still count the purged runs, from their stored totals.
    assert RunTotals(instance).refresh().runs[("payment", "success")] == 3
