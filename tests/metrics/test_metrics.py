"""/metrics after real runs made by other processes, read through `queue-pipelines gateway`
processes, across a restart of the gateway.

Runs execute in subprocesses (like run workers on other pods) against a Dagster instance on a
PostgreSQL database of this module's own, so the counts are exactly this test's runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from queue_pipelines.ledger import EffectLedger, effect_key
from queue_pipelines.sandbox.servers import free_port
from tests.conftest import scratch_database

RUN_JOBS = """
import json, sys
import dagster as dg
from queue_pipelines.definitions import defs

with dg.DagsterInstance.get() as instance:
    for job_name, run_config in json.loads(sys.argv[1]):
        result = defs.get_job_def(job_name).execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""


@pytest.fixture(scope="module")
def metrics_database(postgres_server_url) -> Iterator[str]:
    with scratch_database(postgres_server_url, "qp_metrics") as url:
        yield url


@pytest.fixture
def service_env(
    tmp_path, metrics_database, redis_url, localstripe_url, key_prefix, mail_sink
) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: " + json.dumps(metrics_database) + "\n"
        "telemetry:\n  enabled: false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "STRIPE_"))}
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": metrics_database,
        "REDIS_URL": redis_url,
        "STRIPE_API_BASE": localstripe_url,
        # The payment and refund runs e-mail the buyer: through the session's SMTP server.
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail_sink.port),
        "SMTP_SECURITY": "none",
        "QUEUE_KEY_PREFIX": key_prefix,
        "GATEWAY_JWT_SECRET": "metrics-test-secret-" + "z" * 32,
    }


def run_jobs(env: dict, runs: list[tuple[str, dict]]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", RUN_JOBS, json.dumps(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@contextmanager
def gateway_process(env: dict, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "queue_pipelines.cli", "gateway", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a hang guard: start-up on a loaded machine is slow
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}"""
    text = httpx.get(f"{url}/metrics", timeout=60).text
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def request(key: str, payload: dict) -> dict:
    return {
        "idempotency_key": key,
        "payload": {"order_id": key, **payload},
        "enqueued_at": time.time(),
    }


def payments(tenant: str, *requests: dict) -> tuple[str, dict]:
    """One payment_job run carrying `requests`, as the intake sensor would batch them."""
    config = {"tenant_id": tenant, "requests": list(requests)}
    return "payment_job", {"ops": {"charge_payments": {"config": config}}}


def payment(key: str, amount: int, currency: str, method: str = "pm_card_visa") -> dict:
    return request(
        key,
        {
            "amount": amount,
            "currency": currency,
            "customer_email": "ada@example.com",
            "payment_method": method,
        },
    )


def test_metrics_count_runs_of_other_processes_and_survive_a_restart(
    service_env, tmp_path, tenant, stripe_resource
):
    log = tmp_path / "gateway.log"
    paid = [("p1", 2500, "usd"), ("p2", 1500, "usd"), ("p3", 3000, "eur")]
    first = run_jobs(
        service_env,
        [
            payments(
                tenant,
                *(payment(key, amount, currency) for key, amount, currency in paid[:2]),
                payment("p4", 999, "usd", method="pm_card_chargeCustomerFail"),
            ),
            payments(tenant, payment(*paid[2])),
        ],
    )
    # The declined card fails its request, and marks its run failed once all are settled.
    assert [r["success"] for r in first] == [False, True]

    # What the runs charged, from the effect ledger (not the event log metrics read) and
    # confirmed with Stripe, to compare the scrape with.
    ledger = EffectLedger(service_env["DAGSTER_POSTGRES_URL"])
    succeeded = {
        key: json.loads(ledger.get(effect_key("payment", tenant, key))["result"])
        for key, _, _ in paid
    }
    assert ledger.get(effect_key("payment", tenant, "p4")) is None  # declined: nothing charged
    ledger.dispose()
    stripe_sums: dict[str, int] = {}
    for charged in succeeded.values():
        intent = (
            stripe_resource.api().client().v1.payment_intents.retrieve(charged["payment_intent_id"])
        )
        assert (intent.status, intent.amount) == ("succeeded", charged["amount"])
        stripe_sums[intent.currency] = stripe_sums.get(intent.currency, 0) + intent.amount

    with gateway_process(service_env, log) as url:
        before = scrape(url)
        as_json = httpx.get(f"{url}/metrics/json", timeout=60).json()
        queue_stats = httpx.get(f"{url}/metrics/queue-stats", timeout=10).json()

    # Requests by outcome: the declined card is a failure, not a success of its batch.
    processed = before["queue_jobs_processed_total"]
    assert processed == {
        (("queue", "payment"), ("status", "success")): 3,
        (("queue", "payment"), ("status", "failure")): 1,
    }
    assert before["queue_runs_total"] == {
        (("queue", "payment"), ("status", "success")): 1,
        (("queue", "payment"), ("status", "failure")): 1,
    }
    assert before["queue_jobs_failed_total"] == {(("queue", "payment"), ("reason", "permanent")): 1}
    assert before["payments_processed_total"] == {
        (("currency", "eur"), ("status", "succeeded")): 1,
        (("currency", "usd"), ("status", "succeeded")): 2,
        (("currency", "usd"), ("status", "failed")): 1,
    }
    assert before["payment_amount_total_cents"] == {
        (("currency", c),): float(total) for c, total in stripe_sums.items()
    }
    assert before["queue_job_processing_duration_seconds_count"] == {(("queue", "payment"),): 2}
    assert before["queue_run_launch_latency_seconds_count"] == {(("queue", "payment"),): 2}
    # Each of the four requests waited from its enqueue to its run's start and settlement.
    assert before["queue_request_wait_seconds_count"] == {
        (("job_type", "payment"), ("stage", "started")): 4,
        (("job_type", "payment"), ("stage", "settled")): 4,
    }
    assert before["queue_job_processing_duration_seconds_sum"][(("queue", "payment"),)] > 0
    # Three payment confirmations mailed; no webhook endpoint is configured, so none sent.
    assert before["emails_sent_total"] == {(): 3.0}
    for name in ("emails_failed_total", "webhooks_sent_total", "webhooks_failed_total"):
        assert before[name] == {(): 0.0}
    assert "refunds_processed_total" not in before  # no samples yet
    assert before["queue_dead_letter_size"] == {(): 0.0}
    assert "process_resident_memory_bytes" in before and "service_uptime_seconds" in before
    assert (
        as_json["payments_processed"]["samples"]
        and as_json["queue_jobs_processed"]["type"] == "counter"
    )
    assert queue_stats["dead_letters"] == 0 and "payment" in queue_stats["streams"]

    refund_config = {
        "tenant_id": tenant,
        "requests": [
            {
                "idempotency_key": "r1",
                "payload": {
                    "payment_intent_id": succeeded["p1"]["payment_intent_id"],
                    "amount": 1000,
                },
            }
        ],
    }
    refund = ("refund_job", {"ops": {"refund_payments": {"config": refund_config}}})
    assert [r["success"] for r in run_jobs(service_env, [refund])] == [True]

    with gateway_process(service_env, log) as url:
        after = scrape(url)

    for name in (
        "payments_processed_total",
        "payment_amount_total_cents",
        "queue_jobs_failed_total",
    ):
        assert after.get(name) == before.get(name), name
    assert after["queue_runs_total"] == {
        **before["queue_runs_total"],
        (("queue", "refund"), ("status", "success")): 1,
    }
    assert after["queue_jobs_processed_total"] == {
        **processed,
        (("queue", "refund"), ("status", "success")): 1,
    }
    assert after["refunds_processed_total"] == {(("currency", "usd"), ("status", "succeeded")): 1}
    assert after["refund_amount_total_cents"] == {(("currency", "usd"),): 1000.0}
    assert after["queue_job_processing_duration_seconds_count"] == {
        (("queue", "payment"),): 2,
        (("queue", "refund"),): 1,
    }


PROMQL_WORDS = {"sum", "min", "by", "rate", "increase", "histogram_quantile", "m", "h"}
LABELS = {
    "queue",
    "status",
    "reason",
    "currency",
    "le",
    "source",
    "instance",
    "wallet",
    "route",
    "type",
    "result",
    "failure_class",
    "kind",
    "outcome",
    "event_type",
}


def test_dashboard_uses_only_exported_metric_names(instance, intake):
    import re

    from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
    from queue_pipelines.metrics.gateway import GatewayMetrics

    registry = build_registry(
        QueueMetricsCollector(instance, intake), gateway=GatewayMetrics().registry
    )
    exported = set()
    for family in registry.collect():
        exported |= {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":  # exposed with _total even before its first sample
            exported.add(f"{family.name}_total")
        if family.type == "histogram":
            exported |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    dashboard = json.loads(
        (Path(__file__).parents[2] / "deploy/grafana/queue-pipelines.json").read_text()
    )
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{\{.*?\}\}|\[[0-9]+[mh]\]|\"[^\"]*\"", "", target["expr"])
            used |= set(re.findall(r"[a-z_][a-z0-9_]*", expr)) - PROMQL_WORDS - LABELS
    assert used and used <= exported, used - exported


def test_run_totals_count_the_requests_of_real_batch_runs_incrementally(
    resources, tenant, mail_sink, intake
):
    """One reader, refreshed between runs: new runs are added once, old ones not again; the
    requests of real payment_job and notification_job runs are counted from their outcomes
    tables (docs/metrics.md), replays not twice."""
    import dagster as dg

    from queue_pipelines.intake.batches import Batch
    from queue_pipelines.jobs.batch import batch_run_config
    from queue_pipelines.jobs.notification import notification_job
    from queue_pipelines.jobs.payment import payment_job
    from queue_pipelines.metrics.run_totals import RunTotals
    from tests.notifications.test_jobs import notification
    from tests.payments.test_payment_flow import payment as payment_envelope

    with dg.instance_for_test() as instance:  # this test's runs only

        def run(job, envelopes):
            return job.execute_in_process(
                run_config=batch_run_config(Batch.of(envelopes)),
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )

        totals = RunTotals(instance)
        assert sum(totals.refresh().family("payments").values()) == 0
        run(
            payment_job,
            [
                payment_envelope(tenant, "m1", amount=1200),
                payment_envelope(tenant, "m2", payment_method="pm_card_chargeCustomerFail"),
            ],
        )
        first = totals.refresh()
        assert dict(first.family("payments")) == {("usd", "succeeded"): 1, ("usd", "failed"): 1}
        assert dict(first.family("payment_amounts")) == {"usd": 1200}
        assert first.emails["sent"] == 1
        # A re-run of the same request replays the charge and the e-mail: counted once.
        run(payment_job, [payment_envelope(tenant, "m1", amount=1200)])
        again = totals.refresh()
        assert dict(again.family("payments")) == dict(first.family("payments"))
        assert again.emails["sent"] == 1
        # The first run had a declined card: a failed run (docs/operations.md).
        assert (again.runs[("payment", "failure")], again.runs[("payment", "success")]) == (1, 1)
        broken = {"buyer_name": "Ada", "order_id": "1", "amount": "$1.00"}  # no 'reason'
        run(
            notification_job,
            [notification(tenant, "n1", "payment_failed", broken, f"{tenant}@example.com")],
        )
        later = totals.refresh()
        assert later.emails["failed"] == 1
        assert later.durations["payment"].count == 2

        # The same, as a gateway exports them.
        from prometheus_client import generate_latest

        from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry

        text = generate_latest(build_registry(QueueMetricsCollector(instance, intake))).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("emails_sent_total", ())] == 1
        assert samples[("emails_failed_total", ())] == 1
