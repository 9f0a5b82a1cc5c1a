"""The Stripe client that run workers use (StripeResource.api()) keeps to the rate limit and
the circuit breaker shared through Redis: counted where requests reach the sandbox, through a
proxy in front of localstripe, from two clients as from two run workers."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from pydantic import ValidationError

from queue_pipelines import deployment
from queue_pipelines.failures import TransientError
from queue_pipelines.providers.guard import CircuitOpen, ProviderGuard, RateLimited
from queue_pipelines.providers.stripe import StripeApi
from queue_pipelines.request_runner import Backoff, with_backoff
from queue_pipelines.sandbox.relay import DROP, Relay
from resources import RedisResource, StripeResource
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows


def worker_api(api_base: str, redis_url: str, key_prefix: str, **limits) -> StripeApi:
    """What one run worker builds: its own resource, its own Redis connection."""
    return StripeResource(
        secret_key="sk_test_queue_pipelines",
        api_base=api_base,
        timeout_seconds=10,
        redis=RedisResource(url=redis_url, key_prefix=key_prefix),
        **limits,
    ).api()


def new_customer(api: StripeApi, marker: str, i: int) -> str:
    # Two requests: the listing by e-mail, then the creation.
    return api.find_or_create_customer(
        tenant_id="limits",
        email=f"{marker}-{i}@example.com",
        name=None,
        idempotency_key=f"{marker}-{i}",
    )


def densest(arrivals: list[float]) -> int:
    """The most requests that reached the proxy within 0.8 s of each other. The limiter grants
    at most N slots in any second; a request reaches the proxy a moment after its slot, and
    those moments differ (more so on a loaded machine), so the window counted is a little
    shorter than the limiter's."""
    return max(sum(1 for t in arrivals if start <= t < start + 0.8) for start in arrivals)


def test_two_workers_together_keep_to_the_rate_at_the_sandbox(
    localstripe_url, redis_url, key_prefix
):
    marker = f"rate-{uuid.uuid4().hex[:8]}"
    with Relay(localstripe_url) as proxy:
        workers = [
            worker_api(proxy.url, redis_url, key_prefix, rate_limit="5/second") for _ in range(2)
        ]
        made: list[str] = []

        def work(api: StripeApi, first: int) -> None:
            for i in range(first, first + 5):
                made.append(new_customer(api, marker, i))

        threads = [threading.Thread(target=work, args=(w, 5 * n)) for n, w in enumerate(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        arrivals = sorted(proxy.arrivals)
        statuses = [status for _, _, status in proxy.seen]

    assert len(made) == 10
    assert len(arrivals) == 20 and set(statuses) == {200}
    # A limit of 5 per worker would let 10 through; without any, the 20 requests arrive
    # within a fraction of a second.
    assert densest(arrivals) <= 5


def test_a_payment_run_keeps_to_the_rate(
    localstripe_url, redis_resource, resources, instance, intake, tenant
):
    """The real intake sensor and payment_job, its concurrent items sharing the limit."""
    intake.enqueue_many(
        [payment(tenant, f"r{i}", customer_email=f"rate-{i}@example.com") for i in range(6)]
    )
    with Relay(localstripe_url) as proxy:
        stripe = StripeResource(
            secret_key="sk_test_queue_pipelines",
            api_base=proxy.url,
            timeout_seconds=10,
            redis=redis_resource,
            rate_limit="5/second",
        )
        harness = IntakeHarness(instance, {**resources, "stripe": stripe}, "payment")
        assert harness.drain() == 1
        arrivals = sorted(proxy.arrivals)

    [result] = harness.results
    assert [r["status"] for r in outcome_rows(result)] == ["succeeded"] * 6
    assert len(arrivals) >= 18  # per payment: customer lookup, creation, PaymentIntent
    assert densest(arrivals) <= 5


def test_a_stripe_call_is_one_try_and_one_rate_slot(localstripe_url, redis_url, key_prefix):
    """The SDK sends nothing again on its own: a read answered 500 is one transient failure,
    one request, one slot. Trying again is the request's backoff's, and each try spends a
    slot, as Stripe counts every request it receives."""
    marker = f"one-try-{uuid.uuid4().hex[:8]}"
    with Relay(localstripe_url) as proxy:
        shared = RedisResource(url=redis_url, key_prefix=key_prefix)
        guard = ProviderGuard(
            shared.client(), "stripe", rate="4/minute", max_wait_seconds=0, keys=shared.redis_keys()
        )
        api = StripeApi("sk_test_queue_pipelines", api_base=proxy.url, guard=guard)
        proxy.fail_next("GET", "/v1/customers", status=500, times=2)
        with pytest.raises(TransientError):
            new_customer(api, marker, 1)
        assert [status for _, _, status in proxy.seen] == [500]

        # The request's backoff: the listing fails once more, then the listing and the creation.
        quick = Backoff(attempts=4, first_delay=0.01, max_delay=0.01, jitter=0.0)
        tried = with_backoff(lambda: new_customer(api, marker, 1), quick)
        assert tried.error is None and tried.value.startswith("cus_")
        assert tried.attempts == 2
        assert [status for _, _, status in proxy.seen] == [500, 500, 200, 200]

        with pytest.raises(RateLimited):  # 4 of the minute's 4 slots are spent
            new_customer(api, marker, 2)
        assert len(proxy.seen) == 4


def test_breaker_opened_by_failures_of_one_worker_stops_the_other_before_the_sandbox(
    localstripe_url, redis_url, key_prefix
):
    marker = f"breaker-{uuid.uuid4().hex[:8]}"
    limits = {"rate_limit": "off", "breaker_fail_max": 3, "breaker_reset_seconds": 2}
    with Relay(localstripe_url) as proxy:
        first, second = (worker_api(proxy.url, redis_url, key_prefix, **limits) for _ in "12")
        # Stripe down: two 500s, then a connection dropped without an answer.
        proxy.fail_next("GET", "/v1/customers", status=500, times=2)
        proxy.fail_next("GET", "/v1/customers", status=DROP)
        for i, api in enumerate((first, second, first)):
            with pytest.raises(TransientError) as failed:
                new_customer(api, marker, i)
            assert not isinstance(failed.value, CircuitOpen)
        assert len(proxy.seen) == 3

        for i, api in enumerate((second, first, second)):
            with pytest.raises(CircuitOpen) as refused:
                new_customer(api, marker, 10 + i)
            assert refused.value.retry_in <= 2
        assert len(proxy.seen) == 3  # refused without a request

        time.sleep(2.2)  # the breaker's reset
        customer = new_customer(second, marker, 20)
        assert customer.startswith("cus_")
        assert [status for _, _, status in proxy.seen[3:]] == [200, 200]
        assert first.guard.breaker_state() == {}  # closed again, for every worker
        assert new_customer(first, marker, 21).startswith("cus_")


def test_a_declined_card_does_not_open_the_breaker(stripe_resource, redis_url, key_prefix):
    api = worker_api(stripe_resource.api_base, redis_url, key_prefix, breaker_fail_max=2)
    customer = new_customer(api, f"declined-{uuid.uuid4().hex[:8]}", 0)
    for i in range(3):
        with pytest.raises(Exception, match="card declined"):
            api.create_payment_intent(
                amount=500,
                currency="usd",
                customer_id=customer,
                payment_method="pm_card_chargeCustomerFail",
                description=None,
                metadata={},
                idempotency_key=f"declined-{i}-{uuid.uuid4().hex[:6]}",
            )
    assert api.guard.breaker_state() == {}


@pytest.fixture
def deployment_env(monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    for name in (
        "STRIPE_SECRET_KEY",
        "STRIPE_RATE_LIMIT",
        "STRIPE_BREAKER_FAIL_MAX",
        "STRIPE_BREAKER_RESET_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def deployed_guard():
    """The guard of the Stripe client a run worker of this deployment builds."""
    resources = deployment.all_resources()
    assert resources["stripe"].redis is resources["redis"]
    # Initialized as in a run: the EnvVars read, the nested Redis resource too.
    with resources["stripe"].process_config_and_initialize_cm() as stripe:
        return stripe.api().guard


@pytest.mark.parametrize(
    ("secret_key", "configured", "rate"),
    [
        (None, None, "off"),  # the sandbox: the throughput benchmark must not be capped
        (None, "25/second", "25/second"),
        ("sk_test_" + "t" * 24, None, "25/second"),
        ("sk_live_" + "l" * 24, None, "100/second"),
        ("rk_live_" + "l" * 24, "off", "off"),
    ],
)
def test_the_deployment_chooses_the_rate(deployment_env, secret_key, configured, rate):
    if secret_key:
        deployment_env.setenv("STRIPE_SECRET_KEY", secret_key)
    if configured:
        deployment_env.setenv("STRIPE_RATE_LIMIT", configured)
    guard = deployed_guard()
    assert (guard.provider, guard.rate) == ("stripe", rate)
    assert (guard.fail_max, guard.reset_timeout) == (5, 30.0)


def test_the_deployment_reads_the_breaker_settings(deployment_env):
    deployment_env.setenv("STRIPE_BREAKER_FAIL_MAX", "8")
    deployment_env.setenv("STRIPE_BREAKER_RESET_SECONDS", "12.5")
    guard = deployed_guard()
    assert (guard.fail_max, guard.reset_timeout) == (8, 12.5)
    deployment_env.setenv("STRIPE_BREAKER_FAIL_MAX", "0")
    assert not deployed_guard().breaker_on


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STRIPE_RATE_LIMIT", "fast"),
        ("STRIPE_RATE_LIMIT", "0/second"),
        ("STRIPE_BREAKER_FAIL_MAX", "-1"),
        ("STRIPE_BREAKER_RESET_SECONDS", "-1"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_code_location_loading(
    deployment_env, variable, value
):
    deployment_env.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("STRIPE_").lower()):
        deployment.stripe_resource(deployment.redis_resource())


def test_the_deployment_gives_smtp_its_own_limits(deployment_env):
    for name in ("SMTP_RATE_LIMIT", "SMTP_BREAKER_FAIL_MAX", "SMTP_BREAKER_RESET_SECONDS"):
        deployment_env.delenv(name, raising=False)

    def smtp_guard():
        resources = deployment.all_resources()
        assert resources["notifier"].smtp.redis is resources["redis"]
        with resources["notifier"].smtp.process_config_and_initialize_cm() as smtp:
            return smtp.sender().guard

    guard = smtp_guard()
    assert (guard.provider, guard.rate, guard.fail_max, guard.reset_timeout) == (
        "smtp", "off", 5, 30.0
    )  # fmt: skip
    deployment_env.setenv("SMTP_RATE_LIMIT", "14/second")
    deployment_env.setenv("SMTP_BREAKER_FAIL_MAX", "0")
    deployment_env.setenv("SMTP_BREAKER_RESET_SECONDS", "12")
    guard = smtp_guard()
    assert (guard.rate, guard.breaker_on, guard.reset_timeout) == ("14/second", False, 12.0)
    assert deployed_guard().fail_max == 5  # Stripe's own settings are its own
