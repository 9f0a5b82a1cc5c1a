"""POST /v1/jobs over real HTTP: bearer JWTs, envelope validation, idempotent enqueue."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from tests.support.gateway_server import serve

SECRET = "test-gateway-secret-" + "x" * 32


def payment_envelope(tenant: str, key: str | None = None, **payload) -> dict:
    return {
        "type": "payment",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": key or str(uuid.uuid4()),
        "payload": {
            "order_id": "1042",
            "amount": 2500,
            "currency": "usd",
            "customer_email": "ada@example.com",
            "payment_method": "pm_card_visa",
            **payload,
        },
    }


def hs256(claims: dict, secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def claims(tenant: str, ttl: int = 300, scope: str | None = "jobs:write", **extra) -> dict:
    """A tenant's claims; `scope=None` leaves the scope claim out (such a token writes
    nothing unless the gateway allows unscoped tokens)."""
    scoped = {"scope": scope} if scope is not None else {}
    return {"tenant": tenant, "exp": int(time.time()) + ttl, **scoped, **extra}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def gateway_settings(key_prefix: str, jwt_settings: JWTSettings, **extra) -> GatewaySettings:
    return GatewaySettings(
        jwt=jwt_settings, stripe_webhook_secret=None, key_prefix=key_prefix, **extra
    )


@pytest.fixture
def client(redis_url) -> redis.Redis:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def hs_gateway(client, instance, key_prefix):
    settings = gateway_settings(
        key_prefix, JWTSettings(algorithm="HS256", key=SECRET), max_body_bytes=4096
    )
    with serve(build_app(settings, client, instance)) as url:
        yield url


@pytest.fixture
def rs_gateway(client, instance, key_prefix, rsa_keys):
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="RS256", key=rsa_keys[1]))
    with serve(build_app(settings, client, instance)) as url:
        yield url


def post(url: str, body, token: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    if isinstance(body, dict):
        return httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=10)
    return httpx.post(f"{url}/v1/jobs", content=body, headers=headers, timeout=10)


def stream_length(client, key_prefix: str) -> int:
    return client.xlen(f"{key_prefix}:intake:payment")


def test_valid_token_enqueues_and_returns_the_entry_id(hs_gateway, client, key_prefix, tenant):
    reply = post(hs_gateway, payment_envelope(tenant, "order-1"), hs256(claims(tenant)))
    assert reply.status_code == 202, reply.text
    body = reply.json()
    entries = client.xrange(f"{key_prefix}:intake:payment")
    assert [entry_id for entry_id, _ in entries] == [body["entry_id"]]
    stored = json.loads(entries[0][1]["envelope"])
    assert stored["tenant_id"] == tenant and stored["idempotency_key"] == "order-1"
    assert body["request_key"] == f"payment:{tenant}:order-1" and body["duplicate"] is False


def test_same_idempotency_key_returns_the_first_entry(hs_gateway, client, key_prefix, tenant):
    token = hs256(claims(tenant))
    first = post(hs_gateway, payment_envelope(tenant, "order-2"), token)
    # A retry: same payload, though its envelope id, time and priority are new.
    again = post(hs_gateway, {**payment_envelope(tenant, "order-2"), "priority": -5}, token)
    other = post(hs_gateway, payment_envelope(tenant, "order-3"), token)
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["entry_id"] == first.json()["entry_id"]
    assert again.json()["duplicate"] is True
    assert other.json()["entry_id"] != first.json()["entry_id"]
    assert stream_length(client, key_prefix) == 2


def test_same_key_for_a_different_request_is_a_conflict(hs_gateway, client, key_prefix, tenant):
    token = hs256(claims(tenant))
    first = post(hs_gateway, payment_envelope(tenant, "order-4"), token)
    changed = post(hs_gateway, payment_envelope(tenant, "order-4", amount=9999), token)
    assert first.status_code == 202
    assert changed.status_code == 409, changed.text
    assert changed.json()["entry_id"] == first.json()["entry_id"]
    assert "different request" in changed.json()["error"]
    assert stream_length(client, key_prefix) == 1
    # The record a sensor reads: the first entry and its payload digest.
    from queue_pipelines.intake.schema import envelope_from_dict
    from queue_pipelines.intake.streams import IntakeStreams, request_digest

    streams = IntakeStreams(client, prefix=key_prefix)
    envelope = envelope_from_dict(payment_envelope(tenant, "order-4", amount=9999))
    first_seen = streams.remember_request(envelope.request_key, request_digest(envelope), "0-1")
    assert first_seen.entry_id == first.json()["entry_id"]
    assert first_seen.conflicts_with(request_digest(envelope))
    same = envelope_from_dict(payment_envelope(tenant, "order-4"))
    assert not first_seen.conflicts_with(request_digest(same))


def _unsigned(header: dict, payload: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("expired", 401, "expired"),
        ("wrong_key", 401, "signature"),
        ("alg_none", 401, "'none' is not accepted"),
        ("missing_exp", 401, "'exp'"),
        ("missing_tenant", 401, "'tenant'"),
        ("tenant_mismatch", 403, "someone-else"),
        ("missing_token", 401, "missing bearer token"),
        ("not_bearer", 401, "Bearer"),
    ],
)
def test_hs256_refusals_enqueue_nothing(hs_gateway, client, key_prefix, tenant, case, status, says):
    tokens = {
        "expired": hs256(claims(tenant, ttl=-3600)),
        "wrong_key": hs256(claims(tenant), secret="another-secret-" + "y" * 32),
        "alg_none": _unsigned({"alg": "none", "typ": "JWT"}, claims(tenant)),
        "missing_exp": hs256({"tenant": tenant}),
        "missing_tenant": hs256({"exp": int(time.time()) + 300}),
        "tenant_mismatch": hs256(claims("someone-else")),
        "missing_token": None,
        "not_bearer": None,
    }
    headers = {"Authorization": f"Basic {SECRET}"} if case == "not_bearer" else {}
    reply = post(hs_gateway, payment_envelope(tenant), tokens[case], headers=headers)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]
    assert stream_length(client, key_prefix) == 0


def test_rs256_accepts_its_key_and_refuses_confusion(
    rs_gateway, client, key_prefix, tenant, rsa_keys
):
    private, public = rsa_keys
    good = jwt.encode(claims(tenant), private, algorithm="RS256")
    # Algorithm confusion: an HS256 token whose HMAC key is the server's public key.
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = _unsigned(header, claims(tenant))[:-1]
    signature = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    hs_token = hs256(claims(tenant))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_rsa = jwt.encode(claims(tenant), other_key, algorithm="RS256")
    none_token = _unsigned({"alg": "none"}, claims(tenant))

    for token in (confused, hs_token, wrong_rsa, none_token):
        reply = post(rs_gateway, payment_envelope(tenant), token)
        assert reply.status_code == 401, reply.text
    assert stream_length(client, key_prefix) == 0

    reply = post(rs_gateway, payment_envelope(tenant), good)
    assert reply.status_code == 202, reply.text
    assert stream_length(client, key_prefix) == 1


def test_bad_bodies(hs_gateway, client, key_prefix, tenant):
    token = hs256(claims(tenant))
    invalid = post(hs_gateway, payment_envelope(tenant, amount=0, currency="xyz"), token)
    assert invalid.status_code == 400
    fields = {problem["field"] for problem in invalid.json()["fields"]}
    assert fields == {"payload.amount", "payload.currency"}

    not_json = post(hs_gateway, b"amount=2500", token, headers={"Content-Type": "application/json"})
    assert not_json.status_code == 415
    form = post(
        hs_gateway,
        json.dumps(payment_envelope(tenant)).encode(),
        token,
        headers={"Content-Type": "text/plain"},
    )
    assert form.status_code == 415

    big = payment_envelope(tenant, description="d" * 5000)
    too_large = post(hs_gateway, big, token)
    assert too_large.status_code == 413
    assert stream_length(client, key_prefix) == 0


def test_scopes_per_job_type(client, instance, key_prefix, tenant):
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="HS256", key=SECRET))
    with serve(build_app(settings, client, instance)) as url:
        unscoped = post(url, payment_envelope(tenant), hs256(claims(tenant, scope=None)))
        refund_only = post(
            url, payment_envelope(tenant), hs256(claims(tenant, scope="jobs:write:refund"))
        )
        payment = post(
            url, payment_envelope(tenant), hs256(claims(tenant, scope="jobs:write:payment"))
        )
    assert (unscoped.status_code, refund_only.status_code, payment.status_code) == (403, 403, 202)
    assert "no scope claim" in unscoped.json()["error"]
    assert "'jobs:write:payment'" in unscoped.json()["error"]
    assert stream_length(client, key_prefix) == 1


def test_a_tenant_token_scoped_for_transfers_enqueues_a_transfer(
    client, instance, key_prefix, tenant
):
    from solders.keypair import Keypair

    transfer = {
        "type": "transfer",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": "resale-7",
        "payload": {
            "mint": str(Keypair().pubkey()),
            "to_wallet": str(Keypair().pubkey()),
            "order_id": "r-7",
        },
    }
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="HS256", key=SECRET))
    with serve(build_app(settings, client, instance)) as url:
        mint_only = post(url, transfer, hs256(claims(tenant, scope="jobs:write:mint")))
        scoped = post(url, transfer, hs256(claims(tenant, scope="jobs:write:transfer")))
        bad_mint = post(
            url,
            {**transfer, "payload": {**transfer["payload"], "mint": "not-an-address"}},
            hs256(claims(tenant, scope="jobs:write:transfer")),
        )

    assert (mint_only.status_code, scoped.status_code, bad_mint.status_code) == (403, 202, 400)
    assert scoped.json()["request_key"] == f"transfer:{tenant}:resale-7"
    [(entry_id, fields)] = client.xrange(f"{key_prefix}:intake:transfer")
    assert entry_id == scoped.json()["entry_id"]
    assert json.loads(fields["envelope"])["payload"]["order_id"] == "r-7"
