"""Re-execute a run the way the UI's "Re-execute all" does: a new run of the parent's job and
config (ReexecutionOptions), built from a reconstructable job bound to the test resources."""

from __future__ import annotations

import os

import dagster as dg

from queue_pipelines.jobs.payment import payment_job
from queue_pipelines.jobs.refund import refund_job

JOBS = {job.name: job for job in (payment_job, refund_job)}


def _job_with_test_resources(name: str) -> dg.JobDefinition:
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
    return dg.Definitions(jobs=[JOBS[name]], resources=resources).resolve_job_def(name)


def payment_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("payment_job")


def refund_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("refund_job")


RECONSTRUCTABLE = {"payment_job": payment_job_for_tests, "refund_job": refund_job_for_tests}


def reexecute_all(instance, resources: dict, parent_run_id: str, monkeypatch, node: str):
    """Re-execute every step of `parent_run_id`; returns (result success, the node's output)."""
    monkeypatch.setenv("QP_TEST_STRIPE_URL", resources["stripe"].api_base)
    monkeypatch.setenv("QP_TEST_LEDGER_URL", resources["effect_ledger"].database_url)
    monkeypatch.setenv("QP_TEST_REDIS_URL", resources["redis"].url)
    monkeypatch.setenv("QP_TEST_SMTP_PORT", str(resources["smtp"].port))
    parent = instance.get_run_by_id(parent_run_id)
    with dg.execute_job(
        dg.reconstructable(RECONSTRUCTABLE[parent.job_name]),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=parent_run_id),
    ) as result:
        assert result.dagster_run.parent_run_id == parent_run_id
        return result.success, result.output_for_node(node)
