"""Nothing is lost and nothing launches twice when ticks fail or status sensors fall behind."""

from __future__ import annotations

import pytest

import sensors.intake
from queue_pipelines.jobs.payment import payment_job, payment_run_config
from sensors.intake import build_intake_sensor
from tests.harness import IntakeHarness
from tests.stripe_sandbox import payment_intents_of
from tests.test_payment_flow import payment


def test_tick_that_raises_after_reading_is_redelivered_and_launches_once(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    intake.enqueue_many([payment(tenant, f"k{i}") for i in range(5)])
    harness = IntakeHarness(instance, resources, "payment")
    real_lookup = sensors.intake.lookup_request_runs
    calls = {"n": 0}

    def lookup_that_fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("injected: run storage went away mid-tick")
        return real_lookup(*args, **kwargs)

    monkeypatch.setattr(sensors.intake, "lookup_request_runs", lookup_that_fails_once)

    with pytest.raises(ConnectionError):
        harness.tick()
    assert harness.cursor is None  # the failed tick's cursor was not kept
    assert intake.stats().as_dict()["streams"]["payment"]["pending"] == 5

    first = harness.tick()
    assert len(first) == 5
    for request in first:
        harness.launch(request, report=False)
    # The daemon dies after launching but before the tick's cursor is saved: the tick runs
    # again from the old cursor, reads the same entries, finds their runs and launches nothing.
    harness.cursor = None
    assert harness.tick() == []
    assert harness.drain() == 0

    assert len(harness.results) == 5
    assert harness.skipped_run_keys == []
    assert len(payment_intents_of(stripe_resource, tenant)) == 5
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_request_repeated_before_its_run_launches_asks_for_the_same_run_key(
    instance, resources, intake, tenant, stripe_resource
):
    """The daemon's run-key check is the second guard: both requests carry one run key."""
    harness = IntakeHarness(instance, resources, "payment")
    intake.enqueue(payment(tenant, "twice"))
    [first] = harness.tick()
    intake.enqueue(payment(tenant, "twice"))
    # The first run was never launched (a daemon killed after the tick): the request is asked
    # for again, under the same run key.
    [again] = harness.tick()
    assert again.run_key == first.run_key
    harness.launch(first)
    harness.launch(again)

    assert harness.skipped_run_keys == [first.run_key]
    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_entries_of_runs_the_status_sensors_missed_are_settled_by_the_reclaim_scan(
    instance, resources, intake, tenant, stripe_resource
):
    eager_reclaim = build_intake_sensor(
        "payment", payment_job, payment_run_config, reclaim_after_seconds=0
    )
    harness = IntakeHarness(instance, resources, "payment", sensor_override=eager_reclaim)
    intake.enqueue_many([payment(tenant, f"missed{i}") for i in range(3)])
    intake.enqueue(payment(tenant, "bad-card", payment_method="pm_card_chargeCustomerFail"))
    for request in harness.tick():
        harness.launch(request, report=False)  # the run-status sensors never see these runs
    assert intake.stats().as_dict()["streams"]["payment"]["pending"] == 4

    assert harness.tick() == []

    assert intake.client.xlen(intake.stream_key("payment")) == 0
    [letter] = intake.dead_letters()
    failed_run = next(r for r in harness.results if not r.success)
    assert letter["run_id"] == failed_run.run_id
    assert "card declined" in letter["reason"]
    intents = payment_intents_of(stripe_resource, tenant)
    assert sorted(i.status for i in intents) == ["requires_payment_method"] + ["succeeded"] * 3


def test_entries_of_a_canceled_run_are_dead_lettered_as_canceled(
    instance, resources, intake, tenant
):
    eager_reclaim = build_intake_sensor(
        "payment", payment_job, payment_run_config, reclaim_after_seconds=0
    )
    harness = IntakeHarness(instance, resources, "payment", sensor_override=eager_reclaim)
    intake.enqueue(payment(tenant, "canceled"))
    [request] = harness.tick()
    # The run an operator canceled from the UI before it started.
    run = instance.create_run_for_job(
        payment_job, run_config=request.run_config, tags={**request.tags}
    )
    instance.report_run_canceled(run)

    assert harness.tick() == []

    [letter] = intake.dead_letters()
    assert letter["reason"] == f"run {run.run_id} was canceled"
    assert intake.client.xlen(intake.stream_key("payment")) == 0
