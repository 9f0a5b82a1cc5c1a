"""A returning buyer's Stripe customer comes from the effect ledger, not from a lookup at
Stripe; a customer deleted at Stripe since is forgotten and looked up again."""

from __future__ import annotations

import pytest

from queue_pipelines.failures import TransientError
from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.payments import charge_once, customer_key
from queue_pipelines.providers.stripe import StripeApi, UnknownCustomer
from queue_pipelines.sandbox.relay import Relay


def charge(api, ledger, tenant, key, email):
    return charge_once(
        api,
        ledger,
        tenant_id=tenant,
        idempotency_key=key,
        payment=PaymentPayload(
            amount=1500,
            currency="usd",
            customer_email=email,
            payment_method="pm_card_visa",
            order_id=f"order-{key}",
        ),
        run_id="test-run",
        run_is_live=lambda _run_id: False,
    )


def calls(proxy: Relay, method: str, path: str) -> int:
    return sum(1 for m, p, _ in proxy.seen if m == method and p.split("?")[0] == path)


@pytest.fixture
def proxied(localstripe_url):
    with Relay(localstripe_url) as proxy:
        yield proxy, StripeApi("sk_test_customers", api_base=proxy.url)


def test_a_returning_buyer_is_charged_without_looking_the_customer_up(proxied, ledger, tenant):
    proxy, api = proxied
    first = charge(api, ledger, tenant, "first", "Buyer@Example.com")
    second = charge(api, ledger, tenant, "second", "buyer@example.com")
    third = charge(api, ledger, f"{tenant}-other", "third", "buyer@example.com")

    assert first.customer_id == second.customer_id != third.customer_id
    assert calls(proxy, "GET", "/v1/customers") == 2  # the first payment of each tenant
    assert calls(proxy, "POST", "/v1/customers") == 2
    assert calls(proxy, "POST", "/v1/payment_intents") == 3
    noted = ledger.result_of(customer_key(tenant, "buyer@example.com"))
    assert noted == {"customer_id": first.customer_id}


# Stripe's answer to a PaymentIntent naming a deleted customer (localstripe answers a bare 404).
NO_SUCH_CUSTOMER = {
    "type": "invalid_request_error",
    "code": "resource_missing",
    "param": "customer",
    "message": "No such customer: 'cus_deleted'",
}


def test_a_customer_deleted_at_stripe_is_forgotten_and_looked_up_on_the_retry(
    proxied, ledger, tenant
):
    proxy, api = proxied
    first = charge(api, ledger, tenant, "first", "gone@example.com")
    proxy.fail_next("POST", "/v1/payment_intents", 400, error=NO_SUCH_CUSTOMER)

    with pytest.raises(TransientError, match="no such customer"):
        charge(api, ledger, tenant, "second", "gone@example.com")
    assert ledger.result_of(customer_key(tenant, "gone@example.com")) is None

    retried = charge(api, ledger, tenant, "second", "gone@example.com")  # the request's retry
    assert retried.status == "succeeded"
    assert calls(proxy, "GET", "/v1/customers") == 2  # looked up again (and found: the
    assert retried.customer_id == first.customer_id  # fault above deleted nothing)
    assert ledger.result_of(customer_key(tenant, "gone@example.com")) == {
        "customer_id": retried.customer_id
    }


def test_an_unknown_customer_on_a_first_lookup_is_the_requests_own_failure(proxied, ledger, tenant):
    proxy, api = proxied
    proxy.fail_next("POST", "/v1/payment_intents", 400, error=NO_SUCH_CUSTOMER)

    with pytest.raises(UnknownCustomer):
        charge(api, ledger, tenant, "first", "new@example.com")
    assert ledger.get(f"payment:{tenant}:first") is None  # refused: nothing happened
