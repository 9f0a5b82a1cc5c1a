"""Nothing is lost and nothing launches twice when ticks fail or runs die before settling."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from queue_pipelines import tags
from queue_pipelines.intake.settling import RunState
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.jobs.payment import payment_job
from sensors.intake import lookup_batch_runs
from tests.payments.test_payment_flow import payment
from tests.support.harness import RUN_KEY_TAG, IntakeHarness
from tests.support.stripe_sandbox import payment_intents_of


def test_tick_that_raises_before_recording_its_batch_is_redelivered_and_launches_once(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    intake.enqueue_many([payment(tenant, f"k{i}") for i in range(5)])
    harness = IntakeHarness(instance, resources, "payment")
    real_assign = IntakeStreams.assign_batch
    calls = {"n": 0}

    def assign_that_fails_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("injected: Redis went away mid-tick")
        return real_assign(self, *args, **kwargs)

    monkeypatch.setattr(IntakeStreams, "assign_batch", assign_that_fails_once)

    with pytest.raises(ConnectionError):
        harness.tick()
    assert harness.cursor is None  # the failed tick's cursor was not kept
    assert intake.stats().as_dict()["streams"]["payment"]["pending"] == 5

    [batch] = harness.tick()
    assert len(batch.run_config["ops"]["charge_payments"]["config"]["requests"]) == 5
    harness.launch(batch)
    # The daemon dies after launching but before the tick's cursor is saved: the tick runs
    # again from the old cursor and launches nothing.
    harness.cursor = None
    assert harness.tick() == []
    assert harness.drain() == 0

    assert len(harness.results) == 1
    assert len(payment_intents_of(stripe_resource, tenant)) == 5
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_batch_whose_run_was_never_launched_is_requested_again_under_its_run_key(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "payment")
    intake.enqueue(payment(tenant, "twice"))
    [first] = harness.tick()
    intake.enqueue(payment(tenant, "twice"))  # a duplicate, while the batch waits to launch
    # The first run was never launched (a daemon killed after the tick): the batch is asked
    # for again under the same run key, which the daemon launches once; the duplicate waits
    # on it instead of going into a second batch.
    [again] = harness.tick()
    assert again.run_key == first.run_key
    assert again.run_config == first.run_config
    harness.launch(again)
    assert harness.drain() == 0

    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def _fail_without_running(instance, request, *, cancel: bool = False) -> str:
    """A run that ended before any step ran: a launch failure, a worker killed at start, or
    an operator's cancel."""
    run = instance.create_run_for_job(
        payment_job,
        run_config=request.run_config,
        tags={**request.tags, RUN_KEY_TAG: request.run_key},
    )
    if cancel:
        instance.report_run_canceled(run)
    else:
        instance.report_run_failed(run, "injected: run worker exited before its first step")
    return run.run_id


def test_requests_of_a_run_that_died_before_settling_them_run_again(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "payment")
    intake.enqueue_many([payment(tenant, f"died{i}") for i in range(3)])
    [request] = harness.tick()
    _fail_without_running(instance, request)

    [retry] = harness.tick()
    assert retry.run_key != request.run_key
    # Nothing was attempted (no step started): not counted as an attempt of the requests.
    config = retry.run_config["ops"]["charge_payments"]["config"]
    assert [r["attempt"] for r in config["requests"]] == [1, 1, 1]
    stored = intake.batch(retry.run_key)
    assert [item["launch_failures"] for item in stored["items"]] == [1, 1, 1]
    harness.launch(retry)
    assert harness.drain() == 0

    assert len(payment_intents_of(stripe_resource, tenant)) == 3
    assert intake.dead_letters() == []
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_a_run_canceled_before_it_started_is_run_again_a_bounded_number_of_times(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "payment", max_launch_failures=2)
    intake.enqueue(payment(tenant, "canceled"))
    [first] = harness.tick()
    _fail_without_running(instance, first, cancel=True)
    [second] = harness.tick()
    last_run = _fail_without_running(instance, second, cancel=True)

    assert harness.tick() == []

    [letter] = intake.dead_letters()
    assert letter["reason"] == (
        f"run {last_run} was canceled; 2 runs of the request ended before any step started, "
        "so nothing was done for it: replay it once the stack launches runs again"
    )
    assert letter["run_id"] == last_run
    assert payment_intents_of(stripe_resource, tenant) == []
    assert intake.client.xlen(intake.stream_key("payment")) == 0


@dg.op
def fails():
    raise RuntimeError("injected: the run worker failed")


@dg.job
def failing_job():
    fails()


def failed_run(instance, batch_key: str, **extra_tags: str) -> str:
    result = failing_job.execute_in_process(
        instance=instance, raise_on_error=False, tags={tags.BATCH: batch_key, **extra_tags}
    )
    assert not result.success
    return result.run_id


def test_a_batch_is_live_until_its_retry_is_launched_and_then_follows_the_retry(instance):
    """Dagster keeps `will_retry=true` on a failed run after launching its retry; the batch
    must then follow the retry, or it would stay in flight for good once the retry failed."""
    batch_key = f"payment:t:{uuid.uuid4().hex[:8]}"
    first = failed_run(instance, batch_key, **{tags.WILL_RETRY: "true"})
    assert lookup_batch_runs(instance, [batch_key])[batch_key].state == RunState.IN_PROGRESS

    retry = failed_run(instance, batch_key, **{tags.WILL_RETRY: "false"})
    instance.add_run_tags(first, {tags.AUTO_RETRY_RUN_ID: retry})
    found = lookup_batch_runs(instance, [batch_key])[batch_key]
    assert (found.state, found.run_id) == (RunState.ENDED, retry)
    assert found.failure == (
        f"run {retry} failed in step fails: RuntimeError: injected: the run worker failed"
    )
