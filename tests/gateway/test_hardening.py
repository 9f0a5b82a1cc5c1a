"""The gateway against hostile or broken input, over real HTTP on loopback: forged Stripe
events, internal templates, token and envelope strictness, bad JSON, odd webhook shapes,
and the HTTP limits (header size, slow body; idle and slow connections and the connection
cap: test_gateway_connections.py)."""

from __future__ import annotations

import json
import socket
import time
import uuid

import httpx
import pytest
import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewayConfigError, GatewaySettings, JWTSettings
from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.schema import MAX_ENVELOPE_BYTES
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope, post
from tests.gateway.test_stripe_webhooks import WEBHOOK_SECRET, deliver, event, intent, sign
from tests.support.gateway_server import serve


def make_settings(key_prefix: str, **extra) -> GatewaySettings:
    return GatewaySettings(
        jwt=extra.pop("jwt", JWTSettings(algorithm="HS256", key=SECRET)),
        stripe_webhook_secret=WEBHOOK_SECRET,
        key_prefix=key_prefix,
        **extra,
    )


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def gateway(client, instance, key_prefix):
    settings = make_settings(key_prefix)
    with serve(build_app(settings, client, instance), settings) as url:
        yield url


def stream_lengths(client, key_prefix: str) -> int:
    return sum(client.xlen(f"{key_prefix}:intake:{t}") for t in JOB_TYPES)


# --- security ---------------------------------------------------------------------------


def test_a_tenant_cannot_submit_a_stripe_event(gateway, client, key_prefix, tenant):
    forged = {
        "type": "stripe_event",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": "evt_forged",
        "payload": {
            "event_id": "evt_forged",
            "event_type": "payment_intent.payment_failed",
            "created": 1,
            "object_id": "pi_victim",
            "payment_intent_id": "pi_victim",
            "metadata": {"tenant_id": "victim", "idempotency_key": "order-1"},
        },
    }
    reply = post(gateway, forged, hs256(claims(tenant)))
    assert reply.status_code == 403, reply.text
    assert "/v1/webhooks/stripe" in reply.json()["error"]
    assert stream_lengths(client, key_prefix) == 0


def test_reconciliation_never_judges_a_tenant_named_by_unverified_metadata(ledger):
    from queue_pipelines.gateway.stripe_webhooks import summarize_event
    from queue_pipelines.reconciliation import StripeReconciliations

    victim = f"victim-{uuid.uuid4().hex[:8]}"
    body = event(
        "payment_intent.payment_failed",
        intent(f"pi_{uuid.uuid4().hex}", metadata={"tenant_id": victim, "idempotency_key": "k"}),
    )
    payload = summarize_event(json.loads(body))
    result = StripeReconciliations(ledger).reconcile("attacker", payload, run_id="run-x")
    assert result.outcome == "tenant_mismatch" and result.needs_attention
    assert victim in result.detail


def test_internal_templates_are_refused_at_intake(gateway, client, key_prefix, tenant):
    alert = {
        "type": "notification",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": "n-1",
        "payload": {
            "template": "operator_alert",
            "recipient": "anyone@example.com",
            "context": {"summary": "pay here", "details": "x", "run_id": "r", "tenant_id": "t"},
        },
    }
    reply = post(gateway, alert, hs256(claims(tenant)))
    assert reply.status_code == 400, reply.text
    assert "internal" in reply.json()["reason"] and "payload.template" in reply.json()["reason"]
    allowed = {**alert, "idempotency_key": "n-2"}
    allowed["payload"] = {
        **alert["payload"],
        "template": "payment_confirmation",
        "context": {"buyer_name": "Ada", "order_id": "1042"},
    }
    scoped = hs256(claims(tenant, scope="jobs:write:notification"))
    assert post(gateway, allowed, scoped).status_code == 202
    assert stream_lengths(client, key_prefix) == 1


@pytest.mark.parametrize(
    ("times", "name"),
    [
        # PyJWT reads each of these with int(), so they pass its own checks.
        ({"exp": str(int(time.time()) + 600)}, "exp"),
        ({"iat": True}, "iat"),
        ({"nbf": "1"}, "nbf"),
    ],
)
def test_token_times_must_be_numbers(gateway, client, key_prefix, tenant, times, name):
    token = hs256({"tenant": tenant, "exp": int(time.time()) + 600, **times})
    reply = post(gateway, payment_envelope(tenant), token)
    assert reply.status_code == 401, reply.text
    assert f"the '{name}' claim must be a number" in reply.json()["error"]
    assert stream_lengths(client, key_prefix) == 0


def test_a_maximum_token_lifetime_refuses_long_lived_tokens(client, instance, key_prefix, tenant):
    jwt_settings = JWTSettings(algorithm="HS256", key=SECRET, max_lifetime_seconds=3600)
    settings = make_settings(key_prefix, jwt=jwt_settings)
    with serve(build_app(settings, client, instance), settings) as url:
        too_long = post(url, payment_envelope(tenant), hs256(claims(tenant, ttl=30 * 86400)))
        fine = post(url, payment_envelope(tenant), hs256(claims(tenant, ttl=600)))
    assert too_long.status_code == 401 and "longer than" in too_long.json()["error"]
    assert fine.status_code == 202


@pytest.mark.parametrize("priority", ["7", True, 5.0])
def test_priority_is_strictly_an_integer(gateway, client, key_prefix, tenant, priority):
    body = {**payment_envelope(tenant), "priority": priority}
    reply = post(gateway, body, hs256(claims(tenant)))
    assert reply.status_code == 400, reply.text
    assert any(f["field"] == "priority" for f in reply.json()["fields"])
    assert stream_lengths(client, key_prefix) == 0


def test_webhook_tolerance_must_be_positive():
    for tolerance in (0, -5):
        with pytest.raises(GatewayConfigError, match="STRIPE_WEBHOOK_TOLERANCE_SECONDS"):
            GatewaySettings(
                jwt=JWTSettings(algorithm="HS256", key=SECRET),
                stripe_webhook_secret=WEBHOOK_SECRET,
                stripe_tolerance_seconds=tolerance,
            )


def test_webhook_timestamps_beyond_the_tolerance_ahead_are_refused(gateway, client, key_prefix):
    body = event("payment_intent.succeeded", intent())
    ahead = deliver(gateway, body, sign(body, timestamp=int(time.time()) + 3600))
    assert ahead.status_code == 400 and "future" in ahead.json()["error"]
    slightly = deliver(gateway, body, sign(body, timestamp=int(time.time()) + 5))
    assert slightly.status_code == 200, slightly.text  # clock skew within the window is fine
    assert client.xlen(f"{key_prefix}:intake:stripe_event") == 1


def test_a_signed_timestamp_is_read_as_stripe_reads_it(gateway, client, key_prefix):
    """The SDK reads `t=<ts>=x` as <ts> and accepts the signature; the future-timestamp check
    reads it the same way instead of failing on the `=x`."""
    body = event("payment_intent.succeeded", intent())
    now = int(time.time())
    t_part, v1_part = sign(body, timestamp=now).split(",")
    reply = deliver(gateway, body, f"{t_part}=x,{v1_part}")
    assert reply.status_code == 200, reply.text
    ahead = sign(body, timestamp=now + 3600).split(",")
    reply = deliver(gateway, body, f"{ahead[0]}=x,{ahead[1]}")
    assert reply.status_code == 400 and "future" in reply.json()["error"]
    assert client.xlen(f"{key_prefix}:intake:stripe_event") == 1


# --- bad input: 400 or 413, never 500 --------------------------------------------------


def _raw_post(url: str, body: bytes, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return httpx.post(f"{url}/v1/jobs", content=body, headers=headers, timeout=30)


def test_bad_json_bodies_answer_400(gateway, client, key_prefix, tenant):
    token = hs256(claims(tenant))
    deep = b"[" * 950 + b"]" * 950
    digits = json.dumps(payment_envelope(tenant)).replace(
        '"amount": 2500', '"amount": ' + "9" * 5000
    )
    for body in (deep, digits.encode()):
        reply = _raw_post(gateway, body, token)
        assert reply.status_code == 400, (reply.status_code, reply.text[:300])
        assert reply.json()["reason"]
    assert stream_lengths(client, key_prefix) == 0


@pytest.mark.parametrize("depth", [9, 400, 800])
def test_a_deep_notification_context_answers_400(gateway, client, key_prefix, tenant, depth):
    context: dict = {}
    for _ in range(depth - 1):
        context = {"a": context}
    body = {
        "type": "notification",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": f"deep-{depth}",
        "payload": {
            "template": "payment_confirmation",
            "recipient": "a@example.com",
            "context": context,
        },
    }
    reply = post(gateway, body, hs256(claims(tenant)))
    assert reply.status_code == 400, (reply.status_code, reply.text[:300])
    assert "nested deeper" in reply.json()["reason"]


def test_a_body_whose_stored_form_is_over_the_limit_answers_413(
    client, instance, key_prefix, tenant
):
    settings = make_settings(key_prefix)  # body limit = the envelope limit
    # The defaults the gateway adds (id, created_at, priority) push a body just under the
    # limit over it once stored.
    envelope = payment_envelope(tenant, "big", metadata={"note": ""})
    compact = {"separators": (",", ":")}
    envelope["payload"]["metadata"]["note"] = "x" * (
        MAX_ENVELOPE_BYTES - 40 - len(json.dumps(envelope, **compact).encode())
    )
    body = json.dumps(envelope, **compact).encode()
    assert len(body) == MAX_ENVELOPE_BYTES - 40
    with serve(build_app(settings, client, instance), settings) as url:
        reply = _raw_post(url, body, hs256(claims(tenant)))
    assert reply.status_code == 413, (reply.status_code, reply.text[:300])
    assert "limit" in reply.json()["reason"]
    assert stream_lengths(client, key_prefix) == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[]", "JSON object"),
        (json.dumps({"type": "payment_intent.succeeded", "data": {"object": {}}}).encode(), "'id'"),
        (
            json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": "x"}).encode(),
            "data.object",
        ),
        (
            json.dumps(
                {
                    "id": "evt_1",
                    "type": "payment_intent.succeeded",
                    "created": "abc",
                    "data": {"object": {"id": "pi_1"}},
                }
            ).encode(),
            "created",
        ),
        (b"[" * 1000 + b"]" * 1000, "not JSON"),
        (b'{"id": ' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_signed_webhooks_of_any_shape_answer_400(gateway, client, key_prefix, body, says):
    reply = deliver(gateway, body, sign(body))
    assert reply.status_code == 400, (reply.status_code, reply.text[:300])
    assert says in json.dumps(reply.json())
    assert client.xlen(f"{key_prefix}:intake:stripe_event") == 0


# --- HTTP limits ------------------------------------------------------------------------


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1") else 0


def _status_for_header(url: str, size: int) -> int:
    sock = _connect(url)
    try:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(size // 65536):
            sock.sendall(b"a" * 65536)
        sock.sendall(b"\r\n\r\n")
        return _read_status(sock)
    except (ConnectionResetError, BrokenPipeError):
        # Refused and closed while we were still sending: read what it answered, if anything.
        try:
            return _read_status(sock)
        except OSError:
            return 0
    finally:
        sock.close()


@pytest.mark.parametrize("size", [64 * 1024, 32 * 1024 * 1024])
def test_an_oversized_header_block_is_refused(client, instance, key_prefix, size):
    settings = make_settings(key_prefix, max_header_bytes=8 * 1024)
    with serve(build_app(settings, client, instance), settings) as url:
        status = _status_for_header(url, size)
        normal = httpx.get(f"{url}/health/live", headers={"X-Small": "a" * 1024})
    # 431 from the app when the block arrived whole; 400 (or a closed connection) from the
    # HTTP parser when it refused to buffer more.
    assert status in (0, 400, 431), status
    assert normal.status_code == 200


def test_a_body_that_never_finishes_is_answered_408(client, instance, key_prefix, tenant):
    settings = make_settings(key_prefix, body_timeout_seconds=0.5)
    with serve(build_app(settings, client, instance), settings) as url:
        sock = _connect(url)
        try:
            token = hs256(claims(tenant))
            sock.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\n".encode()
                + b'Content-Length: 1000\r\n\r\n{"type": '
            )
            status = _read_status(sock)  # waits: the server must answer without the rest
        finally:
            sock.close()
    assert status == 408
