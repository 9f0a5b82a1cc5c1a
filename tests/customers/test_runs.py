"""customer_job through the real intake sensor and runs: each request at most once across
duplicate entries and a re-execution, another tenant's customer refused into the dead letters,
one customer's requests in entry order, and the next payment after a delete making a new
customer."""

from __future__ import annotations

from collections import Counter

from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.metrics.run_totals import RunTotals
from queue_pipelines.payments import customer_key
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.reexecution import reexecute_all


def customer(tenant: str, key: str, **payload) -> Envelope:
    return Envelope(
        type="customer", tenant_id=tenant, idempotency_key=key, payload=CustomerPayload(**payload)
    )


def customers_of(stripe_resource, tenant: str) -> list:
    listing = stripe_resource.api().client().v1.customers.list(params={"limit": 100})
    return [
        c
        for c in listing.auto_paging_iter()
        if c.metadata is not None and c.metadata.to_dict().get("tenant_id") == tenant
    ]


def forget_outcomes(intake) -> None:
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))


def created(instance, resources, intake, tenant, key, email) -> str:
    intake.enqueue(customer(tenant, key, action="create", email=email))
    harness = IntakeHarness(instance, resources, "customer")
    harness.drain()
    [row] = outcome_rows(harness.results[-1])
    return row["customer"]


def test_a_duplicate_entry_and_a_reexecution_create_no_second_customer(
    instance, resources, intake, tenant, stripe_resource, monkeypatch
):
    totals = RunTotals(instance)
    before = totals.refresh()
    harness = IntakeHarness(instance, resources, "customer")
    request = customer(tenant, "c1", action="create", email="ada@example.com", name="Ada")
    intake.enqueue(request)
    harness.drain()
    # The intake's outcome of the request is past its keep (a week): only the ledger is left
    # to know that the producer's resend was done.
    forget_outcomes(intake)
    intake.enqueue(request)
    harness.drain()

    first, duplicate = (outcome_rows(r)[0] for r in harness.results)
    assert (first["status"], first["action"], first["changed"]) == ("succeeded", "create", "now")
    assert (duplicate["changed"], duplicate["customer"]) == ("earlier", first["customer"])
    forget_outcomes(intake)
    success, rows = reexecute_all(instance, resources, harness.results[0].run_id, monkeypatch)
    assert success and [r["changed"] for r in rows] == ["earlier"]
    [made] = customers_of(stripe_resource, tenant)
    assert (made.id, made.email, made.name) == (first["customer"], "ada@example.com", "Ada")
    # customers_managed_total counts the change made, not its replays.
    counted = totals.refresh().family("customers") - before.family("customers")
    assert counted == Counter({("create", "success"): 1})


def test_another_tenants_customer_is_dead_lettered_and_left_as_it_was(
    instance, resources, intake, tenant, stripe_resource
):
    totals = RunTotals(instance)
    before = totals.refresh()
    victim = f"{tenant}-victim"
    theirs = created(instance, resources, intake, victim, "c", "v@example.com")
    harness = IntakeHarness(instance, resources, "customer")
    intake.enqueue_many(
        [
            customer(tenant, "rename", action="update", customer_id=theirs, name="Mallory"),
            customer(tenant, "remove", action="delete", customer_id=theirs),
        ]
    )
    harness.drain()

    rows = outcome_rows(harness.results[-1])
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 1)] * 2  # not retried
    reasons = sorted(letter["reason"] for letter in intake.dead_letters())
    assert len(reasons) == 2
    assert all(f"{theirs} is not a customer of tenant {tenant}" in r for r in reasons), reasons
    [kept] = customers_of(stripe_resource, victim)
    assert (kept.id, kept.name) == (theirs, None)
    counted = totals.refresh().family("customers") - before.family("customers")
    assert counted == Counter(
        {("create", "success"): 1, ("update", "failure"): 1, ("delete", "failure"): 1}
    )  # the victim's create; the two refusals


def test_an_update_then_a_delete_in_one_batch_happen_in_that_order_and_the_next_payment_makes_a_new_customer(  # noqa: E501
    instance, resources, intake, tenant, stripe_resource, ledger
):
    intake.enqueue(payment(tenant, "p1"))
    payments = IntakeHarness(instance, resources, "payment")
    payments.drain()
    [paid] = outcome_rows(payments.results[-1])
    [buyer] = customers_of(stripe_resource, tenant)
    noted = customer_key(tenant, "buyer@example.com")
    assert ledger.result_of(noted) == {"customer_id": buyer.id}  # the payment noted it
    harness = IntakeHarness(instance, resources, "customer")
    intake.enqueue_many(
        [
            customer(tenant, "u", action="update", customer_id=buyer.id, name="Ada B."),
            customer(tenant, "d", action="delete", customer_id=buyer.id),
        ]
    )
    harness.drain()

    rows = outcome_rows(harness.results[-1])
    assert [(r["action"], r["status"]) for r in rows] == [
        ("update", "succeeded"),
        ("delete", "succeeded"),
    ]
    assert customers_of(stripe_resource, tenant) == []
    assert ledger.result_of(noted) is None
    intake.enqueue(payment(tenant, "p2"))
    payments.drain()
    [again] = outcome_rows(payments.results[-1])
    assert (paid["status"], again["status"]) == ("succeeded", "succeeded")
    [new] = customers_of(stripe_resource, tenant)
    assert new.id != buyer.id and new.email == "buyer@example.com"
