"""A tenant acts only on its own money: a refund naming another tenant's PaymentIntent, sent
through the gateway or the CLI, is refused for good, refunds nothing and mails nobody.

PaymentIntent ids are not secrets (they are in buyers' mails and webhooks), so the refund
job checks the PaymentIntent's `metadata.tenant_id` before it moves any money."""

from __future__ import annotations

import io
import json

import redis

from queue_pipelines.cli import main
from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import JWTSettings
from tests.gateway.test_jobs import SECRET, claims, gateway_settings, hs256, post
from tests.payments.test_payment_flow import payment
from tests.payments.test_refunds import refunds_of
from tests.support.gateway_server import serve
from tests.support.harness import IntakeHarness, outcome_rows


def test_a_refund_of_another_tenants_payment_is_refused_and_moves_nothing(
    instance, resources, intake, redis_url, key_prefix, tenant, stripe_resource, mail_sink
):
    victim, attacker = f"{tenant}-bravo", f"{tenant}-alpha"
    intake.enqueue(payment(victim, "order-1", amount=4200))
    paid = IntakeHarness(instance, resources, "payment")
    paid.drain()
    [row] = outcome_rows(paid.results[0])
    intent_id, buyer = row["payment_intent"], "buyer@example.com"
    mails_before = len(mail_sink.to(buyer))

    # Through the gateway, with a token of the attacker's own, scoped for refunds ...
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="HS256", key=SECRET))
    gateway_redis = redis.Redis.from_url(redis_url, decode_responses=True)
    with serve(build_app(settings, gateway_redis, instance)) as url:
        token = hs256(claims(attacker, scope="jobs:write:refund"))
        body = {
            "type": "refund", "version": 1, "tenant_id": attacker, "idempotency_key": "steal-1",
            "payload": {"payment_intent_id": intent_id},
        }  # fmt: skip
        accepted = post(url, body, token)
    assert accepted.status_code == 202, accepted.text
    # ... and through the CLI.
    out = io.StringIO()
    code = main(
        ["--redis-url", redis_url, "--prefix", key_prefix, "enqueue", "refund",
         "--tenant", attacker, "--key", "steal-2", "--payment-intent", intent_id, "--json"],
        out=out, err=io.StringIO(),
    )  # fmt: skip
    assert code == 0, out.getvalue()

    refunds = IntakeHarness(instance, resources, "refund")
    refunds.drain()

    rows = [r for result in refunds.results for r in outcome_rows(result)]
    assert sorted(r["request"] for r in rows) == ["steal-1", "steal-2"]
    assert all(r["status"] == "failed" for r in rows), rows
    assert all(f"not a payment of tenant {attacker}" in r["reason"] for r in rows), rows
    letters = {
        json.loads(letter["fields"]["envelope"])["idempotency_key"]: letter["reason"]
        for letter in intake.dead_letters()
    }
    assert set(letters) >= {"steal-1", "steal-2"}
    assert victim not in letters["steal-1"]  # whose payment it is stays unsaid
    assert refunds_of(stripe_resource, intent_id) == []
    assert len(mail_sink.to(buyer)) == mails_before  # no refund mail to the victim's buyer
