"""The gateway's HTTP app in process (Starlette's TestClient: no socket, no uvicorn) on the
in-memory intake's Redis and an ephemeral Dagster instance: what POST /v1/jobs and the
Stripe webhook route answer, what reaches the intake, and what the gateway's own counters
say. Served for real, behind uvicorn and with a real Redis, is tests/gateway/'s."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import dagster as dg
import jwt
import pytest
from starlette.testclient import TestClient

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.gateway.stripe_webhooks import event_envelope
from queue_pipelines.gateway.tenant_limits import TenantLimits
from queue_pipelines.intake.schema import parse_envelope
from tests.support.envelopes import notification, payment_wire

SECRET = "unit-tier-hs256-secret-of-32-bytes!!"
WEBHOOK_SECRET = "whsec_unit_tier"


@pytest.fixture
def gateway(intake) -> TestClient:
    settings = GatewaySettings(
        jwt=JWTSettings("HS256", SECRET),
        stripe_webhook_secret=WEBHOOK_SECRET,
        key_prefix=intake.keys.prefix,
        max_body_bytes=4096,
        tenant_limits=TenantLimits(email_quota=1),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        # Not entered: the lifespan would warm the run totals up, which is the collector's.
        yield TestClient(build_app(settings, intake.client, instance))


def token(tenant: str = "acme", scope: str = "jobs:write") -> dict[str, str]:
    # PyJWT checks `exp` against the datetime clock, which the memory intake leaves alone
    # (it moves `time.time`).
    now = int(datetime.now(UTC).timestamp())
    claims = {"tenant": tenant, "scope": scope, "iat": now, "exp": now + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def post(gateway: TestClient, body, headers=None, **options):
    return gateway.post("/v1/jobs", json=body, headers=headers or token(), **options)


def test_a_valid_request_is_enqueued_once_and_its_repeat_answered_with_the_same_entry(
    gateway, intake
):
    first = post(gateway, payment_wire("acme", "k1"))
    again = post(gateway, payment_wire("acme", "k1"))

    assert first.status_code == again.status_code == 202
    assert first.json()["request_key"] == "payment:acme:k1" and not first.json()["duplicate"]
    assert again.json() == {**first.json(), "duplicate": True}
    (entry,) = intake.read("payment", "0-0", 10)
    assert entry.entry_id == first.json()["entry_id"]
    assert parse_envelope(entry.raw_envelope).payload.amount == payment_wire()["payload"]["amount"]


def test_the_same_key_with_another_payload_is_a_conflict(gateway):
    post(gateway, payment_wire("acme", "k1"))
    changed = payment_wire("acme", "k1")
    changed["payload"]["amount"] += 1

    reply = post(gateway, changed)
    assert reply.status_code == 409 and reply.json()["request_key"] == "payment:acme:k1"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Basic x"}, 401), ({"Authorization": "Bearer x.y.z"}, 401)],
)
def test_credentials_are_checked_before_anything_is_read(gateway, intake, headers, status):
    reply = gateway.post("/v1/jobs", json=payment_wire(), headers=headers)

    assert reply.status_code == status and "error" in reply.json()
    assert intake.stream_ids("payment") == []


def test_refusals_of_the_request_itself(gateway, intake):
    assert post(gateway, payment_wire("globex", "k1")).status_code == 403  # another tenant
    assert post(gateway, payment_wire("acme", "k1", priority=50)).status_code == 403
    invalid = post(gateway, payment_wire("acme", "k1", version=2))
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid envelope"
    assert post(gateway, {"x": "y" * 5000}).status_code == 413
    not_json = gateway.post(
        "/v1/jobs", content=b"{}", headers={**token(), "content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    # Stripe's events enter by the signed webhook route only.
    event = event_envelope(json.loads(stripe_event())).model_dump(mode="json", exclude_none=True)
    assert post(gateway, event).status_code == 403
    assert intake.stream_ids("payment") == intake.stream_ids("stripe_event") == []


def test_a_notification_needs_its_scope_by_name_and_counts_against_the_daily_quota(gateway):
    def wire(key: str) -> dict:
        return notification("acme", key).model_dump(mode="json", exclude_none=True)

    assert post(gateway, wire("n1")).status_code == 403  # jobs:write is not enough
    scoped = token(scope="jobs:write:notification")
    assert post(gateway, wire("n1"), headers=scoped).status_code == 202
    assert post(gateway, wire("n1"), headers=scoped).json()["duplicate"]  # not counted again
    refused = post(gateway, wire("n2"), headers=scoped)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


def sign(body: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def stripe_event(event_id: str = "evt_1", event_type: str = "payment_intent.succeeded") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created": 1_700_000_000,
            "data": {
                "object": {
                    "id": "pi_1",
                    "amount": 2500,
                    "currency": "usd",
                    "status": "succeeded",
                    "metadata": {"tenant_id": "acme"},
                }
            },
        }
    ).encode()


def test_a_signed_stripe_event_is_enqueued_once_and_a_bad_signature_refused(gateway, intake):
    body, now = stripe_event(), int(time.time())

    def deliver(signature: str, content: bytes = body):
        return gateway.post(
            "/v1/webhooks/stripe", content=content, headers={"Stripe-Signature": signature}
        )

    first, again = deliver(sign(body, now)), deliver(sign(body, now))
    assert first.status_code == again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert len(intake.stream_ids("stripe_event")) == 1
    assert deliver(sign(body, now, secret="whsec_other")).status_code == 400
    assert deliver(sign(body, now - 3600)).status_code == 400  # a replay past the tolerance
    ignored = stripe_event("evt_2", "customer.created")
    assert deliver(sign(ignored, now), ignored).json()["ignored"] == "customer.created"
    assert len(intake.stream_ids("stripe_event")) == 1


def test_liveness_and_the_gateways_own_counters(gateway):
    assert gateway.get("/health/live").json() == {"status": "alive"}
    post(gateway, payment_wire("acme", "k1"))
    post(gateway, payment_wire("acme", "k1"))
    gateway.post("/v1/jobs", json=payment_wire())

    text = gateway.get("/metrics").text
    assert 'gateway_job_requests_total{result="accepted",type="payment"} 1.0' in text
    assert 'gateway_job_requests_total{result="duplicate",type="payment"} 1.0' in text
    assert 'gateway_auth_refusals_total{reason="missing_token"} 1.0' in text
