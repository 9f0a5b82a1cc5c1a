"""The families /metrics exports, each with a value from real requests and runs.

One gateway (uvicorn on loopback) in front of a Dagster instance of this module's own (on
PostgreSQL, so its run totals count exactly these runs), the intake Redis, localstripe and the
SMTP sink: tenants' requests, Stripe webhook events, the real intake sensor and jobs, a dead
letter replayed by an operator. Then /metrics is read over HTTP and each family compared with
what was done. docs/metrics.md names, for each family, the test that proves it; the last test
here checks that list against the exposition and the tests.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tests.nft.test_transfer_turns as transfers_module
from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.intake.dead_letters import get_dead_letter, replay_dead_letter
from queue_pipelines.intake.schema import envelope_from_dict
from queue_pipelines.jobs.wallet_balance import wallet_balance_job
from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
from queue_pipelines.metrics.gateway import GatewayMetrics
from queue_pipelines.providers.webhook_signing import new_secret
from queue_pipelines.sandbox.relay import Relay
from tests.conftest import postgres_instance
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope
from tests.gateway.test_stripe_webhooks import WEBHOOK_SECRET, event, intent, sign
from tests.metrics.test_provider_calls import payment_harness
from tests.nft.test_transfer_turns import mint_to_payer, transfer_envelope
from tests.support.gateway_server import serve
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.solana_fixtures import holder
from tests.support.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
# The transfer tests' fixtures: a LiteSVM ledger behind JSON-RPC, with custodial wallets B, C.
custodial_solana = transfers_module.custodial_solana
nft_resources = transfers_module.nft_resources
wallets = transfers_module.wallets
Samples = dict[str, dict[tuple, float]]


@pytest.fixture
def own_instance(postgres_server_url):
    with postgres_instance(postgres_server_url, "qp_metric_families") as instance:
        yield instance


def parse(text: str) -> Samples:
    """{sample name: {sorted label items: value}}"""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labelled(samples: Samples, name: str, *names: str) -> dict[tuple[str, ...], float]:
    """A family's samples keyed by the values of the labels `names`, in that order."""
    return {
        tuple(dict(labels)[n] for n in names): value
        for labels, value in samples.get(name, {}).items()
    }


def post_job(url: str, body, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=10)


def deliver(url: str, body: bytes, signature: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/webhooks/stripe",
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
        timeout=10,
    )


def runs_by_status(instance: dg.DagsterInstance, queue: str) -> dict[str, int]:
    counts = {}
    for status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
        n = instance.get_runs_count(
            dg.RunsFilter(statuses=[status], tags={"queue/job_type": queue})
        )
        if n:
            counts[status.value.lower()] = n
    return counts


def test_families_from_real_requests_and_runs(
    own_instance, resources, intake, tenant, key_prefix, redis_url, localstripe_url
):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_tolerance_seconds=300,
        key_prefix=key_prefix,
    )
    token = hs256(claims(tenant))
    declined = payment_envelope(tenant, "declined", payment_method="pm_card_chargeCustomerFail")
    with (
        Relay(localstripe_url) as proxy,
        WebhookReceiver(new_secret()) as receiver,
        serve(build_app(settings, client, own_instance)) as url,
    ):
        # Tenants' requests: refused for their credentials, refused for what they send,
        # accepted, and accepted again (a duplicate).
        assert post_job(url, payment_envelope(tenant, "ok"), None).status_code == 401
        expired = hs256({**claims(tenant), "exp": int(time.time()) - 3600})
        assert post_job(url, payment_envelope(tenant, "ok"), expired).status_code == 401
        assert post_job(url, payment_envelope("another", "ok"), token).status_code == 403
        assert post_job(url, {"type": "payment"}, token).status_code == 400
        stripe_event = {
            **payment_envelope(tenant, "evt_1"),
            "type": "stripe_event",
            "payload": {
                "event_id": "evt_1",
                "event_type": "charge.refunded",
                "created": 0,
                "object_id": "ch_1",
            },
        }
        assert post_job(url, stripe_event, token).status_code == 403
        assert post_job(url, payment_envelope(tenant, "ok"), token).status_code == 202
        assert post_job(url, payment_envelope(tenant, "ok"), token).json()["duplicate"]
        conflicting = payment_envelope(tenant, "ok", amount=9999)
        assert post_job(url, conflicting, token).status_code == 409
        assert post_job(url, declined, token).status_code == 202
        # A producer writing the stream itself, with an entry the intake must refuse.
        intake.client.xadd(intake.stream_key("payment"), {"envelope": "not json"})

        # The runs, through a relay that lets a scrape happen while the charge is under way.
        during: list[Samples] = []
        proxy.after_answer(
            "POST",
            "/v1/payment_intents",
            lambda: during.append(parse(httpx.get(f"{url}/metrics", timeout=60).text)),
        )
        # The platform's payment endpoint takes the payment webhooks.
        payments = payment_harness(own_instance, resources, proxy, receiver)
        assert payments.drain() == 1
        rows = {row["request"]: row for row in outcome_rows(payments.results[0])}
        assert {key: row["status"] for key, row in rows.items()} == {
            "ok": "succeeded",
            "declined": "failed",
        }

        # Stripe's word on the charge: two events (one says another amount), one again, one
        # unsigned properly, one of a type not reconciled.
        pi = rows["ok"]["payment_intent"]
        ours = {"tenant_id": tenant, "idempotency_key": "ok"}
        matched = event("payment_intent.succeeded", intent(pi, amount=2500, metadata=ours))
        mismatch = event("payment_intent.succeeded", intent(pi, amount=2600, metadata=ours))
        for body in (matched, mismatch, matched):
            assert deliver(url, body, sign(body)).status_code == 200
        assert deliver(url, matched, sign(matched, secret="whsec_other")).status_code == 400
        ignored = event("customer.created", {"id": "cus_1", "object": "customer"})
        assert deliver(url, ignored, sign(ignored)).json()["ignored"] == "customer.created"
        assert IntakeHarness(own_instance, resources, "stripe_event").drain() == 1

        # The operator fixes the declined card and replays its dead letter; the intake forgets
        # "ok" and it comes again: its charge and e-mail are returned from the ledger.
        [letter] = [
            letter
            for letter in intake.dead_letters()
            if letter.get("request_key") == f"payment:{tenant}:declined"
        ]
        replay_dead_letter(
            intake, get_dead_letter(intake, letter["id"]), {"payment_method": "pm_card_visa"}
        )
        ok_key = f"payment:{tenant}:ok"
        intake.client.delete(intake.keys.outcome(ok_key))
        intake.enqueue(envelope_from_dict(payment_envelope(tenant, "ok")))
        assert payments.drain() == 1
        again = {row["request"]: row for row in outcome_rows(payments.results[-1])}
        assert (again["declined"]["status"], again["declined"]["charged"]) == ("succeeded", "now")
        assert (again["ok"]["charged"], again["ok"]["email"]) == ("earlier", "sent earlier")
        assert again["ok"]["webhook"] == "sent earlier"

        text = httpx.get(f"{url}/metrics", timeout=60).text
    client.close()
    samples = parse(text)

    # 40 families and more, by their TYPE lines, as Prometheus reads them.
    assert len([line for line in text.splitlines() if line.startswith("# TYPE ")]) >= 40

    # The gateway's own requests.
    durations = labelled(samples, "gateway_request_duration_seconds_count", "route", "status")
    assert durations[("/v1/jobs", "202")] == 3  # ok, its duplicate, declined
    assert durations[("/v1/jobs", "401")] == 2
    assert durations[("/v1/jobs", "403")] == 2
    assert durations[("/v1/jobs", "400")] == 1
    assert durations[("/v1/jobs", "409")] == 1
    assert durations[("/v1/webhooks/stripe", "200")] == 4
    assert durations[("/v1/webhooks/stripe", "400")] == 1
    assert durations[("/metrics", "200")] == 1  # the scrape during the charge
    assert labelled(samples, "gateway_auth_refusals_total", "reason") == {
        ("missing_token",): 1,
        ("expired",): 1,
        ("wrong_tenant",): 1,
    }
    assert labelled(samples, "gateway_job_requests_total", "type", "result") == {
        ("unknown", "invalid"): 1,
        ("stripe_event", "not_accepted_here"): 1,
        ("payment", "accepted"): 2,
        ("payment", "duplicate"): 1,
        ("payment", "conflict"): 1,
    }
    assert labelled(samples, "stripe_webhook_events_total", "type", "result") == {
        ("payment_intent.succeeded", "enqueued"): 2,
        ("payment_intent.succeeded", "duplicate"): 1,
        ("unknown", "rejected"): 1,
        ("other", "ignored"): 1,
    }

    # What Redis holds: every entry ever added, dead letters by class, replays.
    assert labelled(samples, "intake_enqueued_total", "queue") == {
        # ok, declined, the refused entry, the replay, ok again; two Stripe events
        ("payment",): 5,
        ("stripe_event",): 2,
        ("notification",): 1,  # the declined buyer's payment_failed e-mail, as a request
    }
    assert labelled(samples, "dead_letters_total", "queue", "failure_class") == {
        ("payment", "failed"): 1,
        ("payment", "rejected"): 1,
    }
    assert labelled(samples, "dead_letter_replays_total", "queue") == {("payment",): 1}
    assert samples["queue_dead_letter_size"] == {
        (): 1.0
    }  # the refused entry; the replayed one left

    # The runs: requests by outcome, runs by status, launch latency, replays, reconciliation.
    assert labelled(samples, "queue_jobs_processed_total", "queue", "status") == {
        ("payment", "success"): 3,  # ok, the replayed declined card, ok again
        ("payment", "failure"): 1,  # the declined card: a failed request, not a success
        ("stripe_event", "success"): 2,
    }
    runs = labelled(samples, "queue_runs_total", "queue", "status")
    for queue in ("payment", "stripe_event"):
        assert {s: n for (q, s), n in runs.items() if q == queue} == runs_by_status(
            own_instance, queue
        )
    assert sum(runs.values()) == 3
    assert labelled(samples, "queue_run_launch_latency_seconds_count", "queue") == {
        ("payment",): 2,
        ("stripe_event",): 1,
    }
    assert labelled(samples, "ledger_replays_total", "kind") == {
        ("payment",): 1,
        ("email",): 1,
        ("webhook",): 1,
    }
    # Every payment webhook the endpoint received (a replay sends none), none failed.
    delivered = [r for r in receiver.received if r.status == 200]
    assert samples["webhooks_sent_total"] == {(): float(len(delivered))}
    assert len(delivered) == sum(
        row.get("webhook") == "sent" for result in payments.results for row in outcome_rows(result)
    )
    assert samples["webhooks_failed_total"] == {(): 0.0}
    assert labelled(samples, "stripe_reconciliations_total", "event_type", "outcome") == {
        ("payment_intent.succeeded", "matched"): 1,
        ("payment_intent.succeeded", "amount_mismatch"): 1,
    }
    assert labelled(samples, "payments_processed_total", "currency", "status") == {
        ("usd", "succeeded"): 2,
        ("usd", "failed"): 1,
    }

    # While the first charge was under way: one payment run active, none finished yet.
    [mid] = during
    assert labelled(mid, "queue_active_jobs", "queue")[("payment",)] == 1
    # The request whose charge is held is on the payment stream, read and not settled; the
    # other may have settled meanwhile (the refused entry is a dead letter already).
    waiting = labelled(mid, "queue_size", "queue")[("payment",)]
    assert waiting in (1, 2)
    assert labelled(mid, "queue_pending", "queue")[("payment",)] == waiting
    assert labelled(mid, "queue_jobs_processed_total", "queue", "status") == {}

    # This process.
    memory = labelled(samples, "service_memory_usage_bytes", "type")
    assert 0 < memory[("rss",)] <= memory[("virtual",)]
    assert samples["process_open_fds"][()] > 0
    assert samples["process_max_fds"][()] >= samples["process_open_fds"][()]
    assert samples["process_virtual_memory_bytes"][()] > 0
    assert 0 < samples["process_start_time_seconds"][()] <= time.time()
    assert samples["process_resident_memory_bytes"][()] > 0
    assert samples["process_cpu_seconds_total"][()] > 0
    assert samples["service_uptime_seconds"][()] > 0
    assert samples["service_cpu_usage_percent"][()] >= 0
    assert labelled(samples, "queue_metrics_source_up", "source") == {
        ("dagster",): 1,
        ("redis",): 1,
    }


def scrape(instance, intake) -> Samples:
    """A gateway's exposition text of the runs in `instance`, parsed."""
    registry = build_registry(QueueMetricsCollector(instance, intake))
    return parse(generate_latest(registry).decode())


def test_nft_families_from_litesvm_runs(own_instance, nft_resources, intake, tenant, wallets):
    """Mints, transfers and the payer's balance from real runs on LiteSVM behind JSON-RPC:
    a chain A -> B -> C counts two transfers, a transfer from a wallet that no longer holds
    the ticket one failure, and the wallet-balance run one item of its own."""
    mint, a = mint_to_payer(own_instance, nft_resources, intake, tenant)
    b, c = wallets["B"].pubkey(), wallets["C"].pubkey()
    intake.enqueue(transfer_envelope(tenant, "resale-ab", mint, b, a))
    intake.enqueue(transfer_envelope(tenant, "resale-bc", mint, c, b))
    transfers = IntakeHarness(own_instance, nft_resources, "transfer")
    assert transfers.drain() == 1
    intake.enqueue(transfer_envelope(tenant, "stale", mint, b, a))  # C holds it now
    assert transfers.drain() == 1
    [stale] = outcome_rows(transfers.results[-1])
    assert stale["status"] == "failed" and "not the seller" in stale["reason"]
    assert holder(nft_resources["solana"], mint) == c
    balance = wallet_balance_job.execute_in_process(
        run_config={"ops": {"alert_on_low_balance": {"config": {"threshold_sol": 1.0}}}},
        resources={"solana": nft_resources["solana"], "notifier": nft_resources["notifier"]},
        instance=own_instance,
    )
    assert balance.success

    samples = scrape(own_instance, intake)

    assert labelled(samples, "nfts_minted_total", "status") == {("success",): 1}
    assert labelled(samples, "nft_transfers_total", "status") == {
        ("success",): 2,
        ("failure",): 1,
    }
    payer = str(a)
    left = nft_resources["solana"].chain().balance(a) / 10**9
    assert 99 < left < 100  # the fees and rent of one mint and two transfers are spent
    assert labelled(samples, "solana_wallet_balance_sol", "wallet") == {(payer,): left}
    assert labelled(samples, "queue_jobs_processed_total", "queue", "status") == {
        ("mint", "success"): 1,
        ("transfer", "success"): 2,
        ("transfer", "failure"): 1,
        ("wallet_balance", "success"): 1,  # not an intake job: the run is its one item
    }
    assert labelled(samples, "dead_letters_total", "queue", "failure_class") == {
        ("transfer", "failed"): 1
    }


# docs/metrics.md ----------------------------------------------------------------------


def documented() -> dict[str, str]:
    """{family: the test that proves it} from docs/metrics.md's table of families."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and (names := re.findall(r"`([a-z_]+)`", cells[0])):
            tests = re.findall(r"`(tests/[\w/]+\.py::\w+)`", cells[-1])
            for name in names:
                found[name] = tests[0] if tests else ""
    return found


def exported(instance, intake) -> set[str]:
    """The family names a gateway's registry exports, as they appear after `# TYPE`."""
    registry = build_registry(
        QueueMetricsCollector(instance, intake), gateway=GatewayMetrics().registry
    )
    names = set()
    for family in registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_docs_list_every_exported_family_with_a_test_that_asserts_it(own_instance, intake):
    docs = documented()
    names = exported(own_instance, intake)
    assert len(names) >= 40
    assert set(docs) == names, (sorted(set(docs) - names), sorted(names - set(docs)))
    for family, test in sorted(docs.items()):
        assert test, f"docs/metrics.md names no test for {family}"
        path, _, function = test.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        [found] = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name == function
        ] or [None]
        assert found is not None, f"{test} (for {family}) does not exist"
        source = ast.get_source_segment((ROOT / path).read_text(), found)
        # A family is asserted by name (a histogram by one of its samples).
        stem = family.removesuffix("_total")
        assert re.search(rf"\b{stem}(_total|_count|_bucket|_sum)?\b", source), (
            f"{test} does not name {family}"
        )
