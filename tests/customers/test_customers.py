"""Customer management on the Stripe sandbox and the real effect ledger: each change at most
once per key, a tenant's changes only to its own customers, and a deleted customer forgotten
by the ledger so that the next payment creates a new one (queue_pipelines/customers.py)."""

# `proxied` is test_stripe_customers.py's fixture, imported: pytest finds it by name, which
# ruff reads as an unused import redefined by the tests' parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import pytest

from queue_pipelines.customers import change_key, manage_customer_once
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.payments import customer_key
from tests.providers.test_stripe_customers import calls, charge, proxied


def manage(api, ledger, tenant, key, run_id="run-1", **payload):
    return manage_customer_once(
        api,
        ledger,
        tenant_id=tenant,
        idempotency_key=key,
        request=CustomerPayload(**payload),
        run_id=run_id,
        run_is_live=lambda _run_id: False,
    )


def test_create_update_delete_each_happen_once_per_key(proxied, ledger, tenant):
    proxy, api = proxied
    made = manage(api, ledger, tenant, "c1", action="create", email="Ada@Example.com", name="Ada",
                  metadata={"crm": "42"})  # fmt: skip
    again = manage(api, ledger, tenant, "c1", run_id="run-2", action="create",
                   email="ada@example.com", name="Ada")  # fmt: skip
    assert not made.replayed and again.replayed and again.customer_id == made.customer_id
    assert calls(proxy, "POST", "/v1/customers") == 1
    stored = api.retrieve_customer(made.customer_id)
    assert (stored.email, stored.name, stored.tenant_id) == ("ada@example.com", "Ada", tenant)
    assert stored.metadata["crm"] == "42" and stored.metadata["idempotency_key"] == "c1"

    change = {"action": "update", "customer_id": made.customer_id, "name": "Ada L.",
              "metadata": {"crm": ""}}  # fmt: skip
    updated = manage(api, ledger, tenant, "u1", **change)
    manage(api, ledger, tenant, "u1", run_id="run-2", **change)
    updates = calls(proxy, "POST", f"/v1/customers/{made.customer_id}")
    assert (updated.name, updated.replayed, updates) == ("Ada L.", False, 1)
    assert api.retrieve_customer(made.customer_id).metadata.get("crm", "") == ""

    gone = manage(api, ledger, tenant, "d1", action="delete", customer_id=made.customer_id)
    replayed = manage(api, ledger, tenant, "d1", run_id="run-2", action="delete",
                      customer_id=made.customer_id)  # fmt: skip
    assert (gone.replayed, replayed.replayed) == (False, True)
    assert calls(proxy, "DELETE", f"/v1/customers/{made.customer_id}") == 1
    assert api.retrieve_customer(made.customer_id) is None
    # The sandbox answers a deleted customer as Stripe does, not as one never made.
    assert api.client().v1.customers.retrieve(made.customer_id).to_dict()["deleted"] is True
    assert ledger.get(change_key(tenant, "d1"))["status"] == "done"


def test_another_tenants_customer_is_refused_and_left_untouched(proxied, ledger, tenant):
    proxy, api = proxied
    theirs = manage(api, ledger, f"{tenant}-other", "c", action="create", email="x@example.com")
    # Its id is no secret: a receipt or a webhook can carry it.
    for action, extra in (("update", {"name": "Mallory", "email": "m@example.com"}),
                          ("delete", {})):  # fmt: skip
        with pytest.raises(PermanentError, match="is not a customer of tenant") as refused:
            manage(api, ledger, tenant, f"steal-{action}", action=action,
                   customer_id=theirs.customer_id, **extra)  # fmt: skip
        assert refused.value.code == "not_tenant_customer"
        assert f"{tenant}-other" not in refused.value.reason  # the owner stays unsaid
        assert ledger.get(change_key(tenant, f"steal-{action}")) is None  # released

    assert calls(proxy, "POST", f"/v1/customers/{theirs.customer_id}") == 0
    assert calls(proxy, "DELETE", f"/v1/customers/{theirs.customer_id}") == 0
    stored = api.retrieve_customer(theirs.customer_id)
    assert (stored.email, stored.name) == ("x@example.com", None)


def test_a_customer_stripe_does_not_have_is_refused(proxied, ledger, tenant):
    _, api = proxied
    with pytest.raises(PermanentError, match="Stripe has no customer cus_nothere"):
        manage(api, ledger, tenant, "d", action="delete", customer_id="cus_nothere")


def test_a_second_customer_for_one_email_is_refused_naming_the_first(proxied, ledger, tenant):
    _, api = proxied
    paid = charge(api, ledger, tenant, "p", "buyer@example.com")  # the payment made one
    with pytest.raises(PermanentError, match=f"already \\({paid.customer_id}\\)"):
        manage(api, ledger, tenant, "c", action="create", email="Buyer@example.com")
    other = manage(api, ledger, tenant, "c2", action="create", email="other@example.com")
    move = {"action": "update", "customer_id": other.customer_id}
    with pytest.raises(PermanentError, match=f"already \\({paid.customer_id}\\)"):
        manage(api, ledger, tenant, "u", **move, email="buyer@example.com")
    manage(api, ledger, tenant, "u2", **move, email="OTHER@example.com")  # its own: fine
    assert api.retrieve_customer(other.customer_id).email == "other@example.com"


def test_deleting_the_customer_a_payment_noted_makes_the_next_payment_create_one(
    proxied, ledger, tenant
):
    proxy, api = proxied
    first = charge(api, ledger, tenant, "p1", "buyer@example.com")
    assert ledger.result_of(customer_key(tenant, "buyer@example.com")) == {
        "customer_id": first.customer_id
    }

    manage(api, ledger, tenant, "d", action="delete", customer_id=first.customer_id)
    assert ledger.result_of(customer_key(tenant, "buyer@example.com")) is None
    second = charge(api, ledger, tenant, "p2", "buyer@example.com")

    assert second.status == "succeeded" and second.customer_id != first.customer_id
    assert calls(proxy, "POST", "/v1/customers") == 2  # a new customer, made by the payment
    assert api.retrieve_customer(second.customer_id).tenant_id == tenant


def test_a_created_customer_is_the_one_the_next_payment_uses(proxied, ledger, tenant):
    proxy, api = proxied
    made = manage(api, ledger, tenant, "c", action="create", email="new@example.com")
    paid = charge(api, ledger, tenant, "p", "new@example.com")
    assert paid.customer_id == made.customer_id
    assert calls(proxy, "GET", "/v1/customers") == 1  # the create's own check, not the payment


def test_moving_a_customer_to_another_email_forgets_the_old_one(proxied, ledger, tenant):
    _, api = proxied
    first = charge(api, ledger, tenant, "p1", "old@example.com")
    manage(api, ledger, tenant, "u", action="update", customer_id=first.customer_id,
           email="new@example.com")  # fmt: skip
    assert ledger.result_of(customer_key(tenant, "old@example.com")) is None

    by_new = charge(api, ledger, tenant, "p2", "new@example.com")
    by_old = charge(api, ledger, tenant, "p3", "old@example.com")
    assert by_new.customer_id == first.customer_id != by_old.customer_id
