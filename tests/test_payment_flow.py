"""Intake → sensor ticks → payment runs → PaymentIntents in localstripe, each exactly once."""

from __future__ import annotations

import dagster as dg

from queue_pipelines.intake.schema import Envelope, PaymentPayload
from queue_pipelines.jobs.payment import payment_job
from tests.harness import IntakeHarness
from tests.stripe_sandbox import payment_intents_of


def payment(tenant: str, key: str, amount: int = 2500, **overrides) -> Envelope:
    payload = {
        "order_id": f"order-{key}",
        "amount": amount,
        "currency": "usd",
        "customer_email": "buyer@example.com",
        "customer_name": "Ada Buyer",
        "payment_method": "pm_card_visa",
        **overrides,
    }
    return Envelope(
        type="payment", tenant_id=tenant, idempotency_key=key, payload=PaymentPayload(**payload)
    )


def test_fifty_payments_make_fifty_payment_intents(
    instance, resources, intake, tenant, stripe_resource
):
    intake.enqueue_many([payment(tenant, f"k{i}", amount=1000 + i) for i in range(50)])
    harness = IntakeHarness(instance, resources, "payment")

    executed = harness.drain()

    assert executed == 50
    assert all(result.success for result in harness.results)
    intents = payment_intents_of(stripe_resource, tenant)
    assert len(intents) == 50
    assert sorted(i.amount for i in intents) == [1000 + i for i in range(50)]
    assert {i.status for i in intents} == {"succeeded"}
    stats = intake.stats().as_dict()
    assert stats["streams"]["payment"] == {
        "length": 0,
        "pending": 0,
        "undelivered": 0,
        "oldest_pending_age_seconds": None,
    }


def test_same_key_three_times_charges_once(instance, resources, intake, tenant, stripe_resource):
    ids = [intake.enqueue(payment(tenant, "dup")) for _ in range(3)]
    harness = IntakeHarness(instance, resources, "payment")

    assert harness.drain() == 1

    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0, f"entries {ids} not all acked"


def test_duplicate_arriving_after_success_is_acked_without_a_run(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "payment")
    intake.enqueue(payment(tenant, "late"))
    assert harness.drain() == 1
    intake.enqueue(payment(tenant, "late"))

    assert harness.tick() == []

    assert len(payment_intents_of(stripe_resource, tenant)) == 1
    assert intake.client.xlen(intake.stream_key("payment")) == 0


def test_full_reexecution_of_a_succeeded_run_does_not_charge_again(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    monkeypatch.setenv("QP_TEST_STRIPE_URL", stripe_resource.api_base)
    monkeypatch.setenv("QP_TEST_LEDGER_URL", resources["effect_ledger"].database_url)
    monkeypatch.setenv("QP_TEST_REDIS_URL", resources["redis"].url)
    monkeypatch.setenv("QP_TEST_SMTP_PORT", str(resources["smtp"].port))
    intake.enqueue(payment(tenant, "reexec"))
    harness = IntakeHarness(instance, resources, "payment")
    harness.drain()
    [original] = harness.results

    with dg.execute_job(
        dg.reconstructable(payment_job_with_test_resources),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=original.run_id),
    ) as reexecution:
        assert reexecution.success
        assert reexecution.dagster_run.parent_run_id == original.run_id
        replay = reexecution.output_for_node("charge_payment")

    assert replay.replayed is True
    assert replay.payment_intent_id == original.output_for_node("charge_payment").payment_intent_id
    assert len(payment_intents_of(stripe_resource, tenant)) == 1


def payment_job_with_test_resources() -> dg.JobDefinition:
    """payment_job bound to the session's sandbox, rebuilt in whichever process runs it."""
    import os

    from resources import (
        EffectLedgerResource,
        NotificationSettingsResource,
        RedisResource,
        SmtpResource,
        StripeResource,
        WebhookResource,
    )
    from tests.conftest import TEST_WEBHOOK_SECRET

    resources = {
        "stripe": StripeResource(
            secret_key="sk_test_queue_pipelines",
            api_base=os.environ["QP_TEST_STRIPE_URL"],
            max_network_retries=0,
        ),
        "effect_ledger": EffectLedgerResource(database_url=os.environ["QP_TEST_LEDGER_URL"]),
        "redis": RedisResource(url=os.environ["QP_TEST_REDIS_URL"]),
        "smtp": SmtpResource(
            host="127.0.0.1", port=int(os.environ["QP_TEST_SMTP_PORT"]), security="none"
        ),
        "webhooks": WebhookResource(secret=TEST_WEBHOOK_SECRET),
        "notification_settings": NotificationSettingsResource(),
    }
    return dg.Definitions(jobs=[payment_job], resources=resources).resolve_job_def("payment_job")
