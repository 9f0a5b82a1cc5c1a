"""POST /v1/webhooks/stripe over real HTTP, then stripe_event_job reconciling what arrived.

Events are signed the way Stripe signs them: header `t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>" under the endpoint's whsec_ secret>`; the gateway checks them with the
stripe SDK's own verification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest
import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.reconciliation import StripeReconciliations
from tests.payments.test_payment_flow import payment
from tests.support.gateway_server import serve
from tests.support.harness import IntakeHarness, outcome_rows

WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex


def sign(body: bytes, timestamp: int | None = None, secret: str = WEBHOOK_SECRET) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "api_version": "2024-06-20",
            "data": {"object": obj},
        }
    ).encode()


@pytest.fixture
def gateway(redis_url, instance, key_prefix):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key="s" * 32),
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_tolerance_seconds=300,
        key_prefix=key_prefix,
    )
    with serve(build_app(settings, client, instance)) as url:
        yield url
    client.close()


def deliver(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return httpx.post(f"{url}/v1/webhooks/stripe", content=body, headers=headers, timeout=10)


def stripe_stream(intake) -> list:
    return intake.client.xrange(intake.stream_key("stripe_event"))


def intent(pi: str = "pi_test_1", **fields) -> dict:
    return {
        "id": pi,
        "object": "payment_intent",
        "amount": 2500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {},
        **fields,
    }


def test_signature_checks(gateway, intake):
    body = event("payment_intent.succeeded", intent())
    valid = deliver(gateway, body, sign(body))
    assert valid.status_code == 200, valid.text
    assert valid.json()["duplicate"] is False

    flipped = bytearray(body)
    position = body.index(b'"amount": 2500') + len('"amount": 2')
    flipped[position] = ord("6")  # 2500 -> 2600, signature kept
    changed = deliver(gateway, bytes(flipped), sign(body))
    assert changed.status_code == 400 and "signature" in changed.json()["error"]

    stale = deliver(gateway, body, sign(body, timestamp=int(time.time()) - 301))
    assert stale.status_code == 400 and "signature" in stale.json()["error"]
    wrong_secret = deliver(gateway, body, sign(body, secret="whsec_other"))
    assert wrong_secret.status_code == 400
    unsigned = deliver(gateway, body, None)
    assert unsigned.status_code == 400

    assert len(stripe_stream(intake)) == 1


def test_same_event_twice_is_enqueued_once(gateway, intake):
    body = event("charge.refunded", {"id": "ch_1", "object": "charge", "amount_refunded": 10})
    first = deliver(gateway, body, sign(body))
    # Stripe's retry of the same event carries a new timestamp and signature.
    again = deliver(gateway, body, sign(body, timestamp=int(time.time()) - 5))
    assert first.status_code == again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert len(stripe_stream(intake)) == 1


def test_a_signed_event_that_does_not_fit_the_payload_is_refused(gateway, intake):
    body = event("payment_intent.succeeded", intent(amount=-5))
    reply = deliver(gateway, body, sign(body))
    assert reply.status_code == 400 and "payload.amount" in reply.json()["reason"]
    assert stripe_stream(intake) == []


def test_event_types_not_reconciled_are_acknowledged_not_enqueued(gateway, intake):
    body = event("customer.created", {"id": "cus_1", "object": "customer"})
    reply = deliver(gateway, body, sign(body))
    assert reply.status_code == 200 and reply.json()["ignored"] == "customer.created"
    assert stripe_stream(intake) == []


def test_stripe_event_job_reconciles_with_the_ledger(
    gateway, instance, resources, intake, tenant, ledger
):
    intake.enqueue(payment(tenant, "paid-1", amount=4200))
    payments = IntakeHarness(instance, resources, "payment")
    assert payments.drain() == 1
    [charged] = outcome_rows(payments.results[0])
    ours = {"tenant_id": tenant, "idempotency_key": "paid-1"}

    events = {
        "matched": event(
            "payment_intent.succeeded",
            intent(charged["payment_intent"], amount=4200, metadata=ours),
        ),
        "amount_mismatch": event(
            "payment_intent.succeeded",
            intent(charged["payment_intent"], amount=4300, metadata=ours),
        ),
        "conflict": event(
            "payment_intent.payment_failed",
            intent(
                charged["payment_intent"],
                status="requires_payment_method",
                metadata=ours,
                last_payment_error={"message": "Your card was declined."},
            ),
        ),
        "refunded_outside_pipeline": event(
            "charge.refunded",
            {
                "id": "ch_x",
                "object": "charge",
                "payment_intent": charged["payment_intent"],
                "amount": 4200,
                "amount_refunded": 1000,
                "currency": "usd",
                "metadata": ours,
            },
        ),
        "dispute_opened": event(
            "charge.dispute.created",
            {
                "id": "dp_1",
                "object": "dispute",
                "payment_intent": charged["payment_intent"],
                "amount": 4200,
                "currency": "usd",
                "reason": "fraudulent",
                "metadata": ours,
            },
        ),
    }
    for body in events.values():
        assert deliver(gateway, body, sign(body)).status_code == 200

    reconciler = IntakeHarness(instance, resources, "stripe_event")
    assert reconciler.drain() == 1  # one tenant, one batch
    [result] = reconciler.results
    assert [row["status"] for row in outcome_rows(result)] == ["succeeded"] * len(events)
    table = StripeReconciliations(ledger)
    for expected, body in events.items():
        row = table.get(json.loads(body)["id"])
        assert row["outcome"] == expected, row
        assert row["tenant_id"] == tenant
    assert table.get(json.loads(events["matched"])["id"])["needs_attention"] is False
    assert intake.client.xlen(intake.stream_key("stripe_event")) == 0  # all settled


def test_reconciling_an_event_again_records_it_once(ledger):
    from queue_pipelines.gateway.stripe_webhooks import summarize_event

    payload = summarize_event(
        json.loads(event("payment_intent.succeeded", intent(f"pi_{uuid.uuid4().hex}")))
    )
    table = StripeReconciliations(ledger)
    first = table.reconcile("stripe", payload, run_id="run-1")
    again = table.reconcile("stripe", payload, run_id="run-2")
    assert first.outcome == again.outcome == "unknown"
    assert (first.replayed, again.replayed) == (False, True)
    assert table.get(payload.event_id)["run_id"] == "run-1"
