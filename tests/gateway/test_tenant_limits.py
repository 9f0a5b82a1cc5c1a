"""Per-tenant limits at the gateway (issue #17, points 7 and 8), over real HTTP and a real
Redis: a request rate shared by every replica (429 + Retry-After), a daily e-mail quota for
notification requests, notification context limited to the template's fields, the
notification scope granted only by name, and a priority range per tenant."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import (
    GatewayConfigError,
    GatewaySettings,
    JWTSettings,
    settings_from_env,
)
from queue_pipelines.gateway.tenant_limits import TenantGate, TenantLimits, TenantRefused
from queue_pipelines.intake.keys import IntakeKeys
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope, post
from tests.support.gateway_server import serve

NOTIFY = "jobs:write:notification"


def settings(key_prefix: str, **limits) -> GatewaySettings:
    return GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
        tenant_limits=TenantLimits(**limits),
    )


def notification(tenant: str, key: str | None = None, **context) -> dict:
    return {
        "type": "notification",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": key or str(uuid.uuid4()),
        "payload": {
            "template": "payment_confirmation",
            "recipient": "ada@example.com",
            "context": {"buyer_name": "Ada", "order_id": "1042", **context},
        },
    }


@pytest.fixture
def client(redis_url) -> redis.Redis:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def entries(client, key_prefix: str, job_type: str) -> int:
    return client.xlen(f"{key_prefix}:intake:{job_type}")


def test_a_burst_past_the_rate_is_429_and_two_gateways_share_the_budget(
    client, instance, key_prefix, tenant
):
    """Two app instances (two replicas) on one Redis: the tenant's 5 a minute are spent
    across both, the sixth gets 429 with Retry-After from either; another tenant is not
    affected; an override gives a tenant its own rate."""
    other, generous = f"{tenant}-b", f"{tenant}-c"
    config = settings(key_prefix, rate="5/minute", rates_by_tenant={generous: "50/minute"})
    first_app = build_app(config, client, instance)
    second_app = build_app(config, client, instance)
    token = hs256(claims(tenant, scope="jobs:write"))
    with serve(first_app) as one, serve(second_app) as two:
        answers = [
            post(url, payment_envelope(tenant), token).status_code
            for url in (one, two, one, two, one)
        ]
        over = [post(url, payment_envelope(tenant), token) for url in (two, one)]
        invalid = post(one, {"type": "payment"}, token)  # counted too, and refused first
        others = [
            post(one, payment_envelope(other), hs256(claims(other, scope="jobs:write"))).status_code
            for _ in range(5)
        ]
        generous_answers = [
            post(
                two, payment_envelope(generous), hs256(claims(generous, scope="jobs:write"))
            ).status_code
            for _ in range(8)
        ]

    assert answers == [202] * 5
    for reply in over:
        assert reply.status_code == 429, reply.text
        assert 1 <= int(reply.headers["Retry-After"]) <= 60
        body = reply.json()
        assert body["code"] == "rate_limited" and body["limit"] == "5/minute"
        assert tenant in body["error"] and "retry after" in body["error"]
    assert invalid.status_code == 429
    assert others == [202] * 5
    assert generous_answers == [202] * 8
    assert entries(client, key_prefix, "payment") == 5 + 5 + 8


def test_the_daily_email_quota_refuses_new_notifications_not_repeats(
    client, instance, key_prefix, tenant
):
    config = settings(key_prefix, email_quota=2)
    token = hs256(claims(tenant, scope=f"{NOTIFY} jobs:write"))
    with (
        serve(build_app(config, client, instance)) as one,
        serve(build_app(config, client, instance)) as two,
    ):
        first = post(one, notification(tenant, "n-1"), token)
        second = post(two, notification(tenant, "n-2"), token)
        over = post(one, notification(tenant, "n-3"), token)
        over_elsewhere = post(two, notification(tenant, "n-4"), token)
        repeat = post(two, notification(tenant, "n-1"), token)  # a client's retry
        payment = post(one, payment_envelope(tenant), token)  # not mail: not counted

    assert (first.status_code, second.status_code) == (202, 202)
    for reply in (over, over_elsewhere):
        assert reply.status_code == 429, reply.text
        body = reply.json()
        assert body["code"] == "email_quota_exceeded" and body["quota"] == 2
        assert "daily e-mail quota" in body["error"] and "00:00 UTC" in body["error"]
        assert 1 <= int(reply.headers["Retry-After"]) <= 86400
    assert repeat.status_code == 202 and repeat.json()["duplicate"] is True
    assert repeat.json()["entry_id"] == first.json()["entry_id"]
    assert payment.status_code == 202
    assert entries(client, key_prefix, "notification") == 2


def test_a_quota_of_zero_and_a_new_day(client, key_prefix, tenant):
    """The counter is per UTC day: tomorrow the quota is whole again; a tenant set to 0 may
    send none; Retry-After runs to midnight UTC."""
    now = [datetime(2026, 11, 27, 23, 59, 30, tzinfo=UTC)]
    limits = TenantLimits(email_quota=1, email_quotas_by_tenant={f"{tenant}-none": 0})
    gate = TenantGate(limits, client, IntakeKeys(key_prefix), clock=lambda: now[0])

    gate.reserve_email(tenant)
    with pytest.raises(TenantRefused) as caught:
        gate.reserve_email(tenant)
    assert caught.value.status == 429 and caught.value.retry_after == 30
    with pytest.raises(TenantRefused):
        gate.reserve_email(f"{tenant}-none")
    now[0] = datetime(2026, 11, 28, 0, 0, 1, tzinfo=UTC)
    key = gate.reserve_email(tenant)
    assert key.endswith(f"{tenant}:2026-11-28") and client.ttl(key) > 86400


def test_notification_context_is_refused_field_by_field(client, instance, key_prefix, tenant):
    token = hs256(claims(tenant, scope=NOTIFY))
    cases = {
        "explorer_url": notification(tenant, explorer_url="https://evil.example"),
        "link": notification(tenant, buyer_name="Ada, verify at evil-bank.example"),
        "url": notification(tenant, order_id="1042", buyer_name="https://evil.example/x"),
        "long": notification(tenant, buyer_name="A" * 101),
        "type": notification(tenant, amount=2500),
        "control": notification(tenant, buyer_name="Ada\r\nBcc: all@example.com"),
    }
    with serve(build_app(settings(key_prefix), client, instance)) as url:
        replies = {case: post(url, body, token) for case, body in cases.items()}
        fine = post(url, notification(tenant, amount="25.00 USD", payment_id="pi_1"), token)

    says = {
        "explorer_url": "explorer_url: not a field of template 'payment_confirmation'",
        "link": "buyer_name: looks like a link",
        "url": "buyer_name: looks like a link",
        "long": "buyer_name: over 100 characters",
        "type": "amount: must be a string, not int",
        "control": "buyer_name: contains a control character",
    }
    for case, reply in replies.items():
        assert reply.status_code == 400, (case, reply.text)
        [problem] = reply.json()["fields"]
        assert problem["field"] == "payload.context" and says[case] in problem["message"], case
    assert fine.status_code == 202, fine.text
    assert entries(client, key_prefix, "notification") == 1


def test_the_notification_scope_is_granted_only_by_name(client, instance, key_prefix, tenant):
    tokens = {
        "no scope claim": hs256(claims(tenant, scope=None)),
        "jobs:write": hs256(claims(tenant, scope="jobs:write")),
        "payment only": hs256(claims(tenant, scope="jobs:write:payment")),
        "by name": hs256(claims(tenant, scope=f"jobs:write:payment {NOTIFY}")),
    }
    with serve(build_app(settings(key_prefix), client, instance)) as url:
        replies = {name: post(url, notification(tenant), token) for name, token in tokens.items()}
        payments = {
            name: post(url, payment_envelope(tenant), tokens[name]).status_code
            for name in ("jobs:write", "payment only", "by name")
        }

    for name in ("no scope claim", "jobs:write", "payment only"):
        assert replies[name].status_code == 403, name
        assert NOTIFY in replies[name].json()["error"], name
    assert replies["by name"].status_code == 202
    # Other job types keep their rules: `jobs:write` or the type's own scope.
    assert set(payments.values()) == {202}
    assert entries(client, key_prefix, "notification") == 1


def test_priority_is_capped_per_tenant_and_open_to_operators(client, instance, key_prefix, tenant):
    trusted = f"{tenant}-t"
    config = settings(key_prefix, priority_ranges_by_tenant={trusted: (-100, 10)})

    def with_priority(who: str, priority: int) -> dict:
        return {**payment_envelope(who), "priority": priority}

    with serve(build_app(config, client, instance)) as url:
        tenant_token = hs256(claims(tenant, scope="jobs:write"))
        raised = post(url, with_priority(tenant, 100), tenant_token)
        one = post(url, with_priority(tenant, 1), tenant_token)
        lowered = post(url, with_priority(tenant, -50), tenant_token)
        default = post(url, payment_envelope(tenant), tenant_token)
        operator = post(
            url, with_priority(tenant, 100), hs256(claims(tenant, scope="jobs:write jobs:operator"))
        )
        trusted_token = hs256(claims(trusted, scope="jobs:write"))
        trusted_ok = post(url, with_priority(trusted, 10), trusted_token)
        trusted_over = post(url, with_priority(trusted, 11), trusted_token)

    for reply, allowed in ((raised, (-100, 0)), (one, (-100, 0)), (trusted_over, (-100, 10))):
        assert reply.status_code == 403, reply.text
        body = reply.json()
        assert body["code"] == "priority_not_allowed"
        assert body["allowed_priority"] == {"min": allowed[0], "max": allowed[1]}
        assert f"{allowed[0]}..{allowed[1]}" in body["error"]
    for reply in (lowered, default, operator, trusted_ok):
        assert reply.status_code == 202, reply.text
    stored = [json.loads(f["envelope"]) for _, f in client.xrange(f"{key_prefix}:intake:payment")]
    assert sorted(e["priority"] for e in stored) == [-50, 0, 10, 100]


def test_the_cli_is_the_operators_and_may_use_the_whole_range(redis_url, key_prefix, intake):
    from tests.cli.test_cli import run

    code, out, err = run(
        redis_url, key_prefix,
        "enqueue", "payment", "--tenant", "acme", "--key", "urgent-1", "--order-id", "1",
        "--amount", "2500", "--currency", "usd", "--email", "ada@example.com",
        "--payment-method", "pm_card_visa", "--priority", "100", "--json",
    )  # fmt: skip
    assert code == 0, err
    [(_, fields)] = intake.client.xrange(intake.stream_key("payment"))
    assert json.loads(fields["envelope"])["priority"] == 100


def test_limits_from_the_environment():
    base = {"GATEWAY_JWT_SECRET": "s" * 32}
    defaults = settings_from_env(base).tenant_limits
    assert (defaults.rate, defaults.email_quota, defaults.priority_range) == (
        "50/second",
        1000,
        (-100, 0),
    )
    limits = settings_from_env(
        {
            **base,
            "GATEWAY_TENANT_RATE_LIMIT": "20/second",
            "GATEWAY_TENANT_RATE_LIMITS": "acme=200/second, bravo=off",
            "GATEWAY_TENANT_EMAIL_QUOTA": "off",
            "GATEWAY_TENANT_EMAIL_QUOTAS": "acme=5000 bravo=0",
            "GATEWAY_TENANT_PRIORITY_RANGE": "-10..0",
            "GATEWAY_TENANT_PRIORITY_RANGES": "acme=-100..20",
        }
    ).tenant_limits
    assert [limits.rate_for(t) for t in ("acme", "bravo", "carol")] == [
        "200/second",
        "off",
        "20/second",
    ]
    assert [limits.email_quota_for(t) for t in ("acme", "bravo", "carol")] == [5000, 0, None]
    assert limits.priority_range_for("acme") == (-100, 20)
    assert limits.priority_range_for("carol") == (-10, 0)

    for name, value in [
        ("GATEWAY_TENANT_RATE_LIMIT", "fast"),
        ("GATEWAY_TENANT_RATE_LIMITS", "acme:5/second"),
        ("GATEWAY_TENANT_RATE_LIMITS", "acme=5/second,acme=6/second"),
        ("GATEWAY_TENANT_EMAIL_QUOTA", "-1"),
        ("GATEWAY_TENANT_EMAIL_QUOTAS", "acme=lots"),
        ("GATEWAY_TENANT_PRIORITY_RANGE", "0..200"),
        ("GATEWAY_TENANT_PRIORITY_RANGES", "acme=5..1"),
    ]:
        with pytest.raises(GatewayConfigError, match=name):
            settings_from_env({**base, name: value})
