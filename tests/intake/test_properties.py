"""Property-based tests (hypothesis): whatever arrives, the envelope parser, POST /v1/jobs
and the Stripe webhook route answer with a reason, never a 500 or an unhandled exception;
and a stream entry of any shape is dead-lettered with a reason (or run, if it is valid)."""

from __future__ import annotations

import copy
import json
import time
import uuid

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.gateway.tenant_limits import TenantLimits
from queue_pipelines.intake.batches import BatchPolicy
from queue_pipelines.intake.dispatch import TickCursor, run_intake_tick
from queue_pipelines.intake.schema import Envelope, EnvelopeError, parse_envelope
from queue_pipelines.intake.streams import IntakeStreams, redis_client
from tests.gateway.test_jobs import SECRET, claims, hs256
from tests.gateway.test_stripe_webhooks import WEBHOOK_SECRET, event, intent, sign
from tests.support.gateway_server import serve

TENANT = "acme"
# Every job type, notifications included (they need their scope by name).
SCOPES = "jobs:write jobs:write:notification"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

VALID = {
    "payment": {
        "order_id": "1042",
        "amount": 2500,
        "currency": "usd",
        "customer_email": "ada@example.com",
        "payment_method": "pm_card_visa",
    },
    "refund": {"payment_intent_id": "pi_123", "amount": 100, "reason": "duplicate"},
    "mint": {
        "order_id": "1042",
        "wallet": "So11111111111111111111111111111111111111112",
        "name": "Ticket",
        "symbol": "TIX",
        "attributes": {"event": "Gig", "venue": "Hall", "seat": "A1", "date": "2026-12-01"},
    },
    "transfer": {
        "mint": "So11111111111111111111111111111111111111112",
        "to_wallet": "11111111111111111111111111111111",
        "from_wallet": "SysvarRent111111111111111111111111111111111",
        "order_id": "r-1",
    },
    "notification": {
        "template": "payment_confirmation",
        "recipient": "ada@example.com",
        "context": {"order_id": "1042"},
    },
}


def base_envelope(job_type: str, key: str) -> dict:
    return {
        "type": job_type,
        "version": 1,
        "tenant_id": TENANT,
        "idempotency_key": key,
        "priority": 0,
        "created_at": "2026-11-27T12:00:00Z",
        "payload": copy.deepcopy(VALID[job_type]),
    }


@st.composite
def mutated_envelopes(draw) -> dict:
    """A valid envelope with a few fields (top level or payload) replaced, added or removed."""
    envelope = base_envelope(draw(st.sampled_from(sorted(VALID))), f"k-{uuid.uuid4().hex}")
    for _ in range(draw(st.integers(0, 3))):
        where = envelope if draw(st.booleans()) else envelope.get("payload")
        if not isinstance(where, dict):
            break
        field = draw(st.sampled_from([*where, "extra", "type", "version", "payload"]))
        action = draw(st.sampled_from(["replace", "replace", "delete"]))
        if action == "delete":
            where.pop(field, None)
        else:
            where[field] = draw(json_values)
    return envelope


raw_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_envelopes().map(lambda v: json.dumps(v).encode()),
    st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 2000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(4000, 6000).map(lambda n: b'{"version": ' + b"7" * n + b"}"),
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVED = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FAST
@given(raw=raw_bodies)
def test_the_envelope_parser_raises_only_envelope_errors(raw):
    try:
        parsed = parse_envelope(raw)
    except EnvelopeError as exc:
        assert exc.reason
    else:
        assert isinstance(parsed, Envelope)
        parsed.to_wire() if len(raw) < 60_000 else None


@FAST
@given(text=st.text(max_size=200))
def test_the_envelope_parser_takes_any_string(text):
    try:
        parse_envelope(text)
    except EnvelopeError as exc:
        assert exc.reason


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def gateway(client, instance, key_prefix):
    gateway_settings = GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=WEBHOOK_SECRET,
        key_prefix=key_prefix,
        # Counted as always, but never reached: the examples come faster than a tenant's
        # default rate (tests/gateway/test_tenant_limits.py tests the rate).
        tenant_limits=TenantLimits(rate="100000/second"),
    )
    app = build_app(gateway_settings, client, instance)
    with serve(app, gateway_settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


@SERVED
@given(body=raw_bodies)
def test_post_jobs_never_answers_500(gateway, body):
    reply = gateway.post(
        "/v1/jobs",
        content=body,
        headers={
            "Authorization": f"Bearer {hs256(claims(TENANT, scope=SCOPES))}",
            "Content-Type": "application/json",
        },
    )
    assert reply.status_code in {202, 400, 403, 409, 413, 415}, (reply.status_code, reply.text)
    if reply.status_code != 202:
        assert reply.json()["error"]


def _events():
    valid = st.builds(
        lambda pi, amount: json.loads(event("payment_intent.succeeded", intent(pi, amount=amount))),
        st.from_regex(r"pi_[A-Za-z0-9]{1,20}", fullmatch=True),
        json_values,
    )

    @st.composite
    def mutated(draw):
        body = draw(valid)
        for _ in range(draw(st.integers(0, 3))):
            where = body if draw(st.booleans()) else body.get("data")
            if (
                isinstance(where, dict)
                and isinstance(where.get("object"), dict)
                and draw(st.booleans())
            ):
                where = where["object"]
            if not isinstance(where, dict):
                break
            field = draw(st.sampled_from([*where, "id", "type", "created", "data", "metadata"]))
            if draw(st.booleans()):
                where.pop(field, None)
            else:
                where[field] = draw(json_values)
        return json.dumps(body).encode()

    return st.one_of(mutated(), raw_bodies)


def post_webhook(gateway: httpx.Client, body: bytes, signature: str) -> httpx.Response:
    return gateway.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


@SERVED
@given(body=_events())
def test_the_stripe_webhook_route_never_answers_500(gateway, body):
    reply = post_webhook(gateway, body, sign(body))
    assert reply.status_code in {200, 400, 409, 413}, (reply.status_code, reply.text)


def _signature_headers():
    """Headers around a valid signature of a valid event: the signed timestamp with text
    after it, parts added, dropped or reordered, and headers of any text."""
    body = event("payment_intent.succeeded", intent("pi_header", amount=500))

    @st.composite
    def bent(draw):
        parts = sign(body).split(",")
        if draw(st.booleans()):
            parts[0] += draw(st.sampled_from(["=", "=x", "==", " ", "x", ".5"]))
        extra = st.text(st.sampled_from("tv01=,x .-"), max_size=12)
        parts += draw(st.lists(extra, max_size=3))
        if draw(st.booleans()):
            parts = draw(st.permutations(parts))
        return ",".join(draw(st.lists(st.sampled_from(parts), min_size=0, max_size=5)))

    printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
    # httpx refuses to send a header value with surrounding whitespace: none is generated.
    return body, st.one_of(bent(), printable).map(str.strip)


_HEADER_BODY, _HEADERS = _signature_headers()


@SERVED
@given(header=_HEADERS)
def test_any_stripe_signature_header_is_answered_without_500(gateway, header):
    reply = post_webhook(gateway, _HEADER_BODY, header)
    assert reply.status_code in {200, 400}, (header, reply.status_code, reply.text)


field_values = st.one_of(st.text(max_size=50), st.binary(max_size=50), raw_bodies)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.dictionaries(
        st.one_of(
            st.just("envelope"),
            st.text(min_size=1, max_size=10),
            st.binary(min_size=1, max_size=10),
        ),
        field_values,
        min_size=1,
        max_size=3,
    )
)
def test_a_stream_entry_of_any_shape_is_dead_lettered_with_a_reason(redis_url, key_prefix, fields):
    client = redis_client(redis_url)
    streams = IntakeStreams(client, prefix=f"{key_prefix}:{uuid.uuid4().hex[:8]}")
    try:
        streams.ensure_group("payment")
        entry_id = client.xadd(streams.stream_key("payment"), fields)
        outcome = run_intake_tick(
            streams,
            "payment",
            TickCursor(),
            lambda keys: {},
            policy=BatchPolicy(size=1, max_wait_seconds=0),
            max_entries=10,
            reclaim_after_seconds=3600,
            now=time.time(),
        )
        dead = dict(outcome.dead_lettered)
        if entry_id in dead:
            assert dead[entry_id]
            letters = streams.dead_letters()
            assert [(d["entry_id"], bool(d["reason"])) for d in letters] == [(entry_id, True)]
            assert client.xlen(streams.stream_key("payment")) == 0
        else:  # a valid envelope after all: still in its stream, launched, not lost
            assert client.xlen(streams.stream_key("payment")) == 1
            assert len(outcome.launches) == 1
    finally:
        keys = list(client.scan_iter(f"{streams.prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
