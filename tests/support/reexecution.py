"""Re-execute a run the way the UI's "Re-execute all" does: a new run of the parent's job and
config (ReexecutionOptions), built from a reconstructable job bound to the test resources."""

from __future__ import annotations

import dagster as dg

from queue_pipelines.jobs.customer import customer_job
from queue_pipelines.jobs.notification import notification_job
from queue_pipelines.jobs.payment import payment_job
from queue_pipelines.jobs.refund import refund_job
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.support.harness import outcome_rows

JOBS = {job.name: job for job in (payment_job, refund_job, customer_job, notification_job)}


def _job_with_test_resources(name: str) -> dg.JobDefinition:
    from resources import (
        EffectLedgerResource,
        NotificationSettingsResource,
        NotifierResource,
        RedisResource,
        SmtpResource,
        StripeResource,
        WebhookResource,
    )

    # EnvVar, read when the run starts: Dagster caches a reconstructable job per process, so
    # values read here would stay those of the first test that re-executed.
    resources = {
        "stripe": StripeResource(
            secret_key="sk_test_queue_pipelines",
            api_base=dg.EnvVar("QP_TEST_STRIPE_URL"),
        ),
        "effect_ledger": EffectLedgerResource(database_url=dg.EnvVar("QP_TEST_LEDGER_URL")),
        "redis": RedisResource(
            url=dg.EnvVar("QP_TEST_REDIS_URL"), key_prefix=dg.EnvVar("QP_TEST_REDIS_PREFIX")
        ),
        "notifier": NotifierResource(
            smtp=SmtpResource(
                host="127.0.0.1", port=dg.EnvVar.int("QP_TEST_SMTP_PORT"), security="none"
            ),
            # Webhooks go where the test's receiver listens, when it has one ("": none).
            webhooks=WebhookResource(
                secret=dg.EnvVar("QP_TEST_WEBHOOK_SECRET"),
                payment_url=dg.EnvVar("QP_TEST_WEBHOOK_URL"),
                refund_url=dg.EnvVar("QP_TEST_WEBHOOK_URL"),
            ),
            notification_settings=NotificationSettingsResource(),
        ),
    }
    return dg.Definitions(jobs=[JOBS[name]], resources=resources).resolve_job_def(name)


def payment_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("payment_job")


def refund_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("refund_job")


def customer_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("customer_job")


def notification_job_for_tests() -> dg.JobDefinition:
    return _job_with_test_resources("notification_job")


RECONSTRUCTABLE = {
    "payment_job": payment_job_for_tests,
    "refund_job": refund_job_for_tests,
    "customer_job": customer_job_for_tests,
    "notification_job": notification_job_for_tests,
}


def reexecute_all(instance, resources: dict, parent_run_id: str, monkeypatch, receiver=None):
    """Re-execute every step of `parent_run_id`; returns (success, the run's outcome rows)."""
    monkeypatch.setenv("QP_TEST_STRIPE_URL", resources["stripe"].api_base)
    monkeypatch.setenv("QP_TEST_LEDGER_URL", resources["effect_ledger"].database_url)
    monkeypatch.setenv("QP_TEST_REDIS_URL", resources["redis"].url)
    monkeypatch.setenv("QP_TEST_REDIS_PREFIX", resources["redis"].key_prefix)
    monkeypatch.setenv("QP_TEST_SMTP_PORT", str(resources["notifier"].smtp.port))
    monkeypatch.setenv("QP_TEST_WEBHOOK_URL", receiver.url if receiver else "")
    monkeypatch.setenv(
        "QP_TEST_WEBHOOK_SECRET", receiver.secret if receiver else TEST_WEBHOOK_SECRET
    )
    parent = instance.get_run_by_id(parent_run_id)
    with dg.execute_job(
        dg.reconstructable(RECONSTRUCTABLE[parent.job_name]),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=parent_run_id),
    ) as result:
        assert result.dagster_run.parent_run_id == parent_run_id
        return result.success, outcome_rows(result)
