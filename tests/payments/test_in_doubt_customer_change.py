"""A charge or refund in doubt while the customer job changes the buyer's customer, and Stripe
answering that it saw a request's key before (IdempotencyError): neither charges twice nor
releases a claim whose effect may have happened (docs/guarantees.md).

Each test runs on the sandbox with its Idempotency-Key honoured (as Stripe does, for 24 h) and
ignored (the ledger's own line, as after 24 h), unless it is about Stripe's idempotency
check itself. Stripe's answer is lost by the HTTP relay in front of it, after Stripe acted.
"""

from __future__ import annotations

import json
import uuid

import pytest

from queue_pipelines.customers import change_key, manage_customer_once
from queue_pipelines.effects import SEEN_BY_PROVIDER, LeftInDoubt
from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.ledger import effect_key
from queue_pipelines.payments import charge_idempotency_key, stripe_metadata
from queue_pipelines.providers.stripe import StripeApi
from queue_pipelines.sandbox.relay import DROP, Relay
from resources import StripeResource
from tests.customers.test_runs import customer, customers_of
from tests.effects.test_faults import SECRET_KEY, buyer_payment, charge, intents_for, refund
from tests.payments.test_refunds import refunds_of
from tests.support.harness import IntakeHarness, outcome_rows

NEVER_LIVE = {"run_is_live": lambda _run_id: False}


@pytest.fixture(params=["idempotent_localstripe_url", "localstripe_url"])
def sandbox(request) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture
def relay(sandbox):
    with Relay(sandbox) as relay:
        yield relay


def change_customer(api, ledger, tenant, change: str, customer_id: str) -> None:
    """The customer job's own code, as a run of it would call it."""
    payload = (
        {"action": "update", "customer_id": customer_id, "email": f"moved-{tenant}@example.com"}
        if change == "update"
        else {"action": "delete", "customer_id": customer_id}
    )
    manage_customer_once(
        api, ledger, tenant_id=tenant, idempotency_key=f"change-{change}",
        request=CustomerPayload(**payload), run_id="run-customers", **NEVER_LIVE,
    )  # fmt: skip


def lose_the_next_answer(relay: Relay, path: str) -> None:
    relay.after_answer("POST", path, lambda: None, reply=False)


@pytest.mark.parametrize("change", ["update", "delete"])
def test_a_payment_in_doubt_is_found_after_its_customer_moved_or_was_deleted(
    change, sandbox, relay, ledger, tenant
):
    api = StripeApi(SECRET_KEY, api_base=relay.url)
    payment = buyer_payment()
    # The buyer's first payment notes its customer by e-mail, as in production.
    first = charge(api, ledger, tenant, "first", payment)
    lose_the_next_answer(relay, "/v1/payment_intents")
    with pytest.raises(TransientError, match="could not reach Stripe"):
        charge(api, ledger, tenant, "k", payment)
    key = effect_key("payment", tenant, "k")
    assert ledger.get(key)["status"] == "pending"  # charged, answer lost: in doubt

    # The link by e-mail goes: the ledger's row, and Stripe's answer by e-mail.
    change_customer(api, ledger, tenant, change, first.customer_id)
    assert api.find_customer(tenant, str(payment.customer_email)) is None

    retried = charge(api, ledger, tenant, "k", payment, run_id="run-2")

    assert retried.replayed and retried.status == "succeeded"
    assert retried.customer_id == first.customer_id
    assert ledger.get(key)["status"] == "done"
    made = intents_for(StripeResource(secret_key=SECRET_KEY, api_base=sandbox), tenant, "k")
    assert [intent.id for intent in made] == [retried.payment_intent_id]


def test_a_refund_in_doubt_is_found_after_the_buyers_customer_was_deleted(
    sandbox, relay, ledger, tenant
):
    api = StripeApi(SECRET_KEY, api_base=relay.url)
    paid = charge(api, ledger, tenant, "paid", buyer_payment())
    lose_the_next_answer(relay, "/v1/refunds")
    with pytest.raises(TransientError, match="could not reach Stripe"):
        refund(api, ledger, tenant, "r", paid.payment_intent_id)
    change_customer(api, ledger, tenant, "delete", paid.customer_id)

    # A refund is looked for under its PaymentIntent, which no customer change touches.
    retried = refund(api, ledger, tenant, "r", paid.payment_intent_id, run_id="run-2")

    assert retried.replayed and retried.remaining == 1000
    assert refunds_of(
        StripeResource(secret_key=SECRET_KEY, api_base=sandbox), paid.payment_intent_id
    ) == [500]


# Stripe's IdempotencyError: an earlier call with the key reached it -------------------------


def sent_earlier_with_other_parameters(api, tenant, key, payment, customer_id, metadata) -> str:
    """A PaymentIntent created under the Stripe idempotency key of `payment` with other
    parameters (another amount), as an attempt of the request before this one did."""
    made = api.create_payment_intent(
        amount=1499, currency="usd", customer_id=customer_id, payment_method="pm_card_visa",
        description=None, metadata=metadata,
        idempotency_key=charge_idempotency_key(effect_key("payment", tenant, key), payment),
    )  # fmt: skip
    return made.id


def payment_posts(relay: Relay) -> int:
    return sum(
        1 for m, p, _ in relay.seen if (m, p.split("?")[0]) == ("POST", "/v1/payment_intents")
    )


def test_a_key_stripe_saw_with_other_parameters_is_settled_by_the_charge_it_finds(
    idempotent_localstripe_url, ledger, tenant
):
    api = StripeApi(SECRET_KEY, api_base=idempotent_localstripe_url)
    payment = buyer_payment()
    buyer = api.find_or_create_customer(
        tenant_id=tenant, email=str(payment.customer_email), name=None,
        idempotency_key=f"buyer-{uuid.uuid4().hex}",
    )  # fmt: skip
    earlier = sent_earlier_with_other_parameters(
        api, tenant, "k", payment, buyer, stripe_metadata(tenant, "k", payment.order_id, {})
    )

    outcome = charge(api, ledger, tenant, "k", payment)

    assert outcome.replayed and (outcome.payment_intent_id, outcome.amount) == (earlier, 1499)
    assert ledger.get(effect_key("payment", tenant, "k"))["status"] == "done"
    stripe = StripeResource(secret_key=SECRET_KEY, api_base=idempotent_localstripe_url)
    assert [intent.id for intent in intents_for(stripe, tenant, "k")] == [earlier]


def test_a_key_stripe_saw_with_other_parameters_never_releases_the_claim(
    idempotent_localstripe_url, ledger, tenant
):
    with Relay(idempotent_localstripe_url) as relay:
        api = StripeApi(SECRET_KEY, api_base=relay.url)
        # Nothing the lookup can find: another customer, no metadata of this request's.
        elsewhere = api.find_or_create_customer(
            tenant_id=f"other-{tenant}", email="someone@example.com", name=None,
            idempotency_key=f"other-{uuid.uuid4().hex}",
        )  # fmt: skip
        payment = buyer_payment()
        sent_earlier_with_other_parameters(api, tenant, "k", payment, elsewhere, {})
        key = effect_key("payment", tenant, "k")
        posts = payment_posts(relay)

        with pytest.raises(LeftInDoubt, match="no effect of it can be found") as first:
            charge(api, ledger, tenant, "k", payment)
        # A later attempt (a dead letter replayed, days later) asks Stripe and sends nothing.
        with pytest.raises(LeftInDoubt) as later:
            charge(api, ledger, tenant, "k", buyer_payment(), run_id="run-replay")

        assert first.value.permanent and first.value.code == "needs_reconciliation"
        assert not isinstance(first.value, PermanentError)  # not a refusal: nothing released
        assert later.value.code == "needs_reconciliation"
        assert payment_posts(relay) == posts + 1  # the one Stripe refused; none after it
        row = ledger.get(key)
        assert row["status"] == "pending"
        assert SEEN_BY_PROVIDER in json.loads(row["result"])  # the claim's notes


# The customer job's own edges -------------------------------------------------------------


def test_a_delete_whose_first_attempt_died_before_the_owner_check_is_no_such_customer(
    localstripe_url, ledger, tenant
):
    missing = f"cus_{uuid.uuid4().hex[:14]}"
    payload = CustomerPayload(action="delete", customer_id=missing)
    with Relay(localstripe_url) as relay:
        api = StripeApi(SECRET_KEY, api_base=relay.url)
        relay.fail_next("GET", f"/v1/customers/{missing}", status=DROP)

        def attempt(run_id):
            return manage_customer_once(
                api, ledger, tenant_id=tenant, idempotency_key="d", request=payload,
                run_id=run_id, **NEVER_LIVE,
            )  # fmt: skip

        with pytest.raises(TransientError):
            attempt("run-1")  # died reading the customer: the claim is in doubt
        assert ledger.get(change_key(tenant, "d"))["status"] == "pending"
        with pytest.raises(PermanentError, match="Stripe has no customer") as retried:
            attempt("run-2")

    assert retried.value.code == "no_such_customer"
    assert ledger.get(change_key(tenant, "d")) is None  # refused: nothing was deleted


def test_a_create_and_an_update_moving_a_customer_onto_its_email_take_turns(
    instance, resources, intake, tenant, stripe_resource
):
    harness = IntakeHarness(instance, resources, "customer")
    intake.enqueue(customer(tenant, "other", action="create", email="other@example.com"))
    harness.drain()
    [other] = customers_of(stripe_resource, tenant)
    intake.enqueue_many(
        [
            customer(tenant, "c", action="create", email="Shared@example.com"),
            customer(
                tenant, "u", action="update", customer_id=other.id, email="shared@example.com"
            ),
        ]
    )
    harness.drain()

    # In entry order, one after the other: the create first, then the update is refused.
    rows = {r["request"]: r for r in outcome_rows(harness.results[-1])}
    assert (rows["c"]["status"], rows["u"]["status"]) == ("succeeded", "failed")
    assert rows["u"]["reason"].endswith(f"({rows['c']['customer']}): one customer per e-mail")
    emails = sorted(c.email for c in customers_of(stripe_resource, tenant))
    assert emails == ["other@example.com", "shared@example.com"]
