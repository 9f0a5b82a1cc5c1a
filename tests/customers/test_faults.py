"""A customer change at most once with the fault at an exact moment (as tests/effects/test_faults.py
does for charges and refunds): the request lost before Stripe saw it, Stripe's answer lost
after it acted, the ledger gone before the record, the worker killed after Stripe acted.

The Stripe sandbox ignores Idempotency-Key here (`localstripe_url`): what holds is the ledger
and its question to Stripe, not Stripe's idempotency cache.
"""

# The fault fixtures are test_effect_faults.py's, imported: pytest finds them by name, which
# ruff reads as unused imports redefined by the tests' parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from queue_pipelines.customers import change_key, manage_customer_once
from queue_pipelines.effects import EffectUnrecorded
from queue_pipelines.failures import TransientError
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.providers.stripe import StripeApi
from queue_pipelines.sandbox.relay import DROP, LOSE_REPLY
from tests.customers.test_runs import customers_of
from tests.effects.test_faults import SECRET_KEY, ledger_cut, stripe_relay


def manage(api, ledger, tenant, key, payload, run_id="run-1"):
    return manage_customer_once(
        api, ledger, tenant_id=tenant, idempotency_key=key, run_id=run_id,
        request=CustomerPayload(**payload), run_is_live=lambda _run_id: False,
    )  # fmt: skip


def calls(relay, method: str, path: str) -> int:
    return sum(1 for m, p, _ in relay.seen if m == method and p.split("?")[0] == path)


def prepared(action: str, api, ledger, tenant) -> tuple[dict, str, str]:
    """The request under test, and the method and path of the call that changes Stripe."""
    if action == "create":
        return {"action": "create", "email": "new@example.com"}, "POST", "/v1/customers"
    made = manage(api, ledger, tenant, "setup", {"action": "create", "email": "c@example.com"})
    path = f"/v1/customers/{made.customer_id}"
    if action == "update":
        payload = {"action": "update", "customer_id": made.customer_id, "name": "Renamed"}
        return payload, "POST", path
    return {"action": "delete", "customer_id": made.customer_id}, "DELETE", path


def assert_stripe_holds_one_change(action, stripe_resource, tenant, outcome) -> None:
    held = customers_of(stripe_resource, tenant)
    if action == "create":
        assert [c.id for c in held] == [outcome.customer_id]
    elif action == "update":
        assert [(c.id, c.name) for c in held] == [(outcome.customer_id, "Renamed")]
    else:
        assert held == []


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_stripes_answer_lost_after_it_acted_is_settled_by_asking_stripe(
    action, stripe_relay, ledger, stripe_resource, tenant
):
    api = StripeApi(SECRET_KEY, api_base=stripe_relay.url)
    payload, method, path = prepared(action, api, ledger, tenant)
    stripe_relay.fail_next(method, path, status=LOSE_REPLY)

    with pytest.raises(TransientError):
        manage(api, ledger, tenant, "k", payload)
    assert ledger.get(change_key(tenant, "k"))["status"] == "pending"  # in doubt
    retried = manage(api, ledger, tenant, "k", payload)  # the request's retry

    assert retried.replayed  # found done at Stripe: not done again
    assert ledger.get(change_key(tenant, "k"))["status"] == "done"
    assert calls(stripe_relay, method, path) == 1
    assert_stripe_holds_one_change(action, stripe_resource, tenant, retried)


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_a_record_that_fails_after_stripe_acted_is_settled_by_asking_stripe(
    action, ledger_cut, stripe_relay, stripe_resource, tenant
):
    cut, cut_ledger = ledger_cut
    api = StripeApi(SECRET_KEY, api_base=stripe_relay.url)
    payload, method, path = prepared(action, api, cut_ledger, tenant)
    stripe_relay.after_answer(method, path, cut.cut)

    with pytest.raises(EffectUnrecorded, match="happened, but the effect ledger could not"):
        manage(api, cut_ledger, tenant, "k", payload)
    cut.restore()
    assert cut_ledger.get(change_key(tenant, "k"))["status"] == "pending"
    retried = manage(api, cut_ledger, tenant, "k", payload)

    assert retried.replayed
    assert cut_ledger.get(change_key(tenant, "k"))["status"] == "done"
    assert calls(stripe_relay, method, path) == 1
    assert_stripe_holds_one_change(action, stripe_resource, tenant, retried)


def test_a_create_lost_before_stripe_saw_it_is_made_on_the_retry_once(
    stripe_relay, ledger, stripe_resource, tenant
):
    api = StripeApi(SECRET_KEY, api_base=stripe_relay.url)
    payload = {"action": "create", "email": "new@example.com"}
    stripe_relay.fail_next("POST", "/v1/customers", status=DROP)

    with pytest.raises(TransientError):
        manage(api, ledger, tenant, "k", payload)
    assert customers_of(stripe_resource, tenant) == []
    retried = manage(api, ledger, tenant, "k", payload)

    assert not retried.replayed  # Stripe had no trace of it: made now, once
    [made] = customers_of(stripe_resource, tenant)
    assert made.id == retried.customer_id


def test_a_worker_killed_after_stripe_created_the_customer_leaves_one(
    stripe_relay, ledger, postgres_url, stripe_resource, tenant
):
    spec = {
        "kind": "customer", "stripe": stripe_relay.url, "secret_key": SECRET_KEY,
        "ledger": postgres_url, "tenant": tenant, "key": "k", "run_id": "run-killed",
        "payload": {"action": "create", "email": "killed@example.com"},
    }  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.effect_worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
    )
    # Stripe has created it; the worker dies before it hears so, let alone records it.
    stripe_relay.after_answer(
        "POST", "/v1/customers", lambda: os.kill(worker.pid, signal.SIGKILL), reply=False
    )
    assert worker.wait(timeout=120) == -signal.SIGKILL
    key = change_key(tenant, "k")
    assert (ledger.get(key)["status"], ledger.get(key)["run_id"]) == ("pending", "run-killed")

    retried = manage(stripe_resource.api(), ledger, tenant, "k", spec["payload"], "run-retry")

    assert retried.replayed
    [made] = customers_of(stripe_resource, tenant)
    assert made.id == retried.customer_id
