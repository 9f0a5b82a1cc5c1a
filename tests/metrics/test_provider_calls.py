"""The run workers' provider calls on /metrics: real payment_job runs call localstripe through
a fault-injecting proxy that counts every request, and the gateway's collector, reading the
runs from a Dagster instance of the test's own, must show exactly those calls."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from queue_pipelines.metrics.collector import QueueMetricsCollector, build_registry
from queue_pipelines.providers.webhook_signing import new_secret
from queue_pipelines.sandbox.relay import Relay
from queue_pipelines.telemetry.provider_calls import LATENCY_BUCKETS
from resources import StripeResource, WebhookResource
from tests.conftest import postgres_instance, with_notifier
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.webhook_receiver import WebhookReceiver

# The SDK call behind each request the proxy saw, as the Stripe client names its operations.
STRIPE_OPERATIONS = {
    ("GET", "/v1/customers"): "CustomerService.list",
    ("POST", "/v1/customers"): "CustomerService.create",
    ("POST", "/v1/payment_intents"): "PaymentIntentService.create",
    # A request retried after a failed charge is in doubt: its PaymentIntents are looked up.
    ("GET", "/v1/payment_intents"): "PaymentIntentService.list",
}


@pytest.fixture
def own_instance(postgres_server_url):
    """A Dagster instance of this test's own: the run totals count exactly its runs."""
    with postgres_instance(postgres_server_url, "qp_provider_metrics") as instance:
        yield instance


def scrape(collector: QueueMetricsCollector) -> dict[str, dict[tuple, float]]:
    """The exposition text of the gateway's registry, parsed: {sample: {labels: value}}."""
    text = generate_latest(build_registry(collector)).decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_labels(samples: dict[tuple, float], provider: str, *names: str) -> dict[tuple, float]:
    """One provider's samples, keyed by the values of the labels `names`."""
    out = {}
    for labels, value in samples.items():
        named = dict(labels)
        if named.get("provider") == provider:
            out[tuple(named[name] for name in names)] = value
    return out


def payment_harness(
    instance, resources: dict, proxy: Relay, receiver: WebhookReceiver
) -> IntakeHarness:
    """The payment intake and job with Stripe behind `proxy` and the platform's payment
    webhooks going to `receiver`."""
    via_proxy = StripeResource(secret_key="sk_test_queue_pipelines", api_base=proxy.url)
    webhooks = WebhookResource(secret=receiver.secret, payment_url=receiver.url)
    return IntakeHarness(
        instance,
        {**with_notifier(resources, webhooks=webhooks), "stripe": via_proxy},
        "payment",
    )


def stripe_calls_seen(proxy: Relay) -> Counter:
    calls = Counter()
    for method, path, _status in proxy.seen:
        calls[STRIPE_OPERATIONS[(method, path.split("?", 1)[0])]] += 1
    return calls


def test_stripe_calls_of_payment_runs_and_their_errors_reach_the_collector(
    own_instance, resources, intake, tenant, localstripe_url, mail_sink
):
    def buyer(key: str) -> str:
        return f"{tenant}-{key}@example.com"

    with Relay(localstripe_url) as proxy, WebhookReceiver(new_secret()) as receiver:
        harness = payment_harness(own_instance, resources, proxy, receiver)
        # One batch: two cards that pay, one that is declined (permanent), and a Stripe 500
        # on one PaymentIntent creation (transient: that request is tried again); the
        # platform's receiver answers one webhook with a 500 (transient: sent again).
        proxy.fail_next("POST", "/v1/payment_intents", status=500)
        receiver.answer(500)
        intake.enqueue_many(
            [
                payment(tenant, "ok1", customer_email=buyer("ok1")),
                payment(tenant, "ok2", customer_email=buyer("ok2")),
                payment(
                    tenant,
                    "declined",
                    customer_email=buyer("declined"),
                    payment_method="pm_card_chargeCustomerFail",
                ),
            ]
        )
        assert harness.drain() == 1
        [first] = harness.results
        assert not first.success  # the declined card fails the run, once all are settled
        assert sorted((r["request"], r["status"]) for r in outcome_rows(first)) == [
            ("declined", "failed"),
            ("ok1", "succeeded"),
            ("ok2", "succeeded"),
        ]

        # A request whose PaymentIntent creation fails on every attempt of its run: the run
        # fails (its tally is in the step failure), the sensor batches it again, it pays.
        proxy.fail_next("POST", "/v1/payment_intents", status=503, times=4)
        intake.enqueue(payment(tenant, "stubborn", customer_email=buyer("stubborn")))
        assert harness.drain() == 2
        assert [r.success for r in harness.results[1:]] == [False, True]

    seen = stripe_calls_seen(proxy)
    injected = Counter(
        STRIPE_OPERATIONS[(m, p.split("?", 1)[0])]
        for m, p, status in proxy.seen
        if status in (500, 503)
    )
    assert seen["PaymentIntentService.create"] == 4 + 5  # 3 + 1 retried; 4 failed + 1
    assert injected == {"PaymentIntentService.create": 5}

    samples = scrape(QueueMetricsCollector(own_instance, intake))

    counts = by_labels(
        samples["worker_provider_call_duration_seconds_count"], "stripe", "operation"
    )
    assert counts == {(op,): float(n) for op, n in seen.items()}
    every = by_labels(
        samples["worker_provider_call_duration_seconds_bucket"], "stripe", "operation", "le"
    )
    for operation, n in seen.items():
        assert every[(operation, "+Inf")] == n
        bounds = [every[(operation, repr(b))] for b in LATENCY_BUCKETS]
        assert bounds == sorted(bounds) and bounds[-1] <= n
    assert all(
        v > 0
        for v in by_labels(
            samples["worker_provider_call_duration_seconds_sum"], "stripe", "operation"
        ).values()
    )

    errors = by_labels(
        samples["worker_provider_call_error_duration_seconds_count"],
        "stripe",
        "operation",
        "error_class",
    )
    assert errors == {
        ("PaymentIntentService.create", "transient"): 5.0,  # the injected 500 and 503s
        ("PaymentIntentService.create", "permanent"): 1.0,  # the declined card
    }

    # The confirmation e-mails the runs sent, one SMTP call each, all delivered.
    delivered = sum(len(mail_sink.to(buyer(k))) for k in ("ok1", "ok2", "stubborn"))
    assert delivered == 3
    smtp = by_labels(samples["worker_provider_call_duration_seconds_count"], "smtp", "operation")
    assert smtp == {("send",): 3.0}
    smtp_errors = samples["worker_provider_call_error_duration_seconds_count"]
    assert by_labels(smtp_errors, "smtp", "operation", "error_class") == {}

    # The payment webhooks, one call per delivery attempt; the 500 answer is an error.
    webhook_answers = Counter(r.status for r in receiver.received)
    assert webhook_answers == {200: 3, 500: 1}
    assert by_labels(
        samples["worker_provider_call_duration_seconds_count"], "webhook", "operation"
    ) == {("deliver",): 4.0}
    assert by_labels(
        samples["worker_provider_call_error_duration_seconds_count"],
        "webhook",
        "operation",
        "error_class",
    ) == {("deliver", "transient"): 1.0}

    # A restarted gateway reads the same histograms back from the instance's stored totals.
    restarted = scrape(QueueMetricsCollector(own_instance, intake))
    for name in (
        "worker_provider_call_duration_seconds_bucket",
        "worker_provider_call_error_duration_seconds_count",
    ):
        assert restarted[name] == samples[name]
