"""Every effect at most once, with the fault landing at an exact moment: after the provider
acted and before the ledger recorded it (docs/guarantees.md).

The faults, each injected at that one point rather than at a random time:
- Redis (the circuit breaker's and rate limit's store) cut: the guard's bookkeeping fails;
- the effect ledger's PostgreSQL cut: the record fails;
- the run worker killed by SIGKILL: nothing after the call runs at all.

The Stripe sandbox of these tests ignores Idempotency-Key (conftest.py's `localstripe_url`),
and the SDK re-sends nothing that creates: what holds is the project's own line, the ledger
and its question to the provider, not Stripe's idempotency cache. Redis and PostgreSQL are
the real servers, behind a TCP relay the test cuts (tests/support/tcp_cut.py); Stripe is
localstripe behind an HTTP relay that runs the fault once it has the answer in hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from email.message import EmailMessage
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from solders.keypair import Keypair

from queue_pipelines.effects import EffectUnrecorded
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.payloads import PaymentPayload, RefundPayload
from queue_pipelines.ledger import EffectLedger, effect_key
from queue_pipelines.nft.minting import mint_ticket_once
from queue_pipelines.nft.transfers import transfer_ticket_once
from queue_pipelines.notifications.delivery import send_email_once, send_webhook_once
from queue_pipelines.notifications.events import payment_notice
from queue_pipelines.notifications.notifier import Notifier
from queue_pipelines.payments import charge_once, refund_once
from queue_pipelines.providers.guard import ProviderGuard
from queue_pipelines.providers.stripe import StripeApi
from queue_pipelines.providers.webhooks import WebhookSender
from queue_pipelines.sandbox.relay import Relay
from resources import NotificationSettingsResource
from tests.payments.test_refunds import refunds_of
from tests.support.solana_fixtures import ticket_payload
from tests.support.stripe_sandbox import payment_intents_of
from tests.support.tcp_cut import TcpCut
from tests.support.webhook_receiver import WebhookReceiver

SECRET_KEY = "sk_test_queue_pipelines"
LIVE = {"run_is_live": lambda _run_id: False}


class AnswerThen:
    """A provider client whose `method` runs `fault` right after the provider answered, before
    its caller hears of it (for the providers without an HTTP relay in front: SMTP, the
    webhook receiver, the Solana ledger)."""

    def __init__(self, inner, method: str, fault):
        self._inner, self._method, self._fault = inner, method, fault

    def __getattr__(self, name):
        attribute = getattr(self._inner, name)
        if name != self._method:
            return attribute

        def answered_then_fault(*args, **kwargs):
            answer = attribute(*args, **kwargs)
            self._fault()
            return answer

        return answered_then_fault


@pytest.fixture
def ledger_cut(postgres_url):
    """The effect ledger on the real PostgreSQL, through a relay the test can cut."""
    parts = urlsplit(postgres_url)
    with TcpCut(parts.hostname, parts.port or 5432) as cut:
        through = parts._replace(netloc=f"{parts.username}@127.0.0.1:{cut.port}")
        ledger = EffectLedger(urlunsplit(through))
        yield cut, ledger
        ledger.dispose()


@pytest.fixture
def redis_cut(redis_url):
    parts = urlsplit(redis_url)
    with TcpCut(parts.hostname, parts.port or 6379) as cut:
        yield cut, redis.Redis(host="127.0.0.1", port=cut.port, db=int(parts.path[1:] or 0))


@pytest.fixture
def stripe_relay(localstripe_url):
    with Relay(localstripe_url) as relay:
        yield relay


def buyer_payment(amount: int = 1500) -> PaymentPayload:
    return PaymentPayload(
        order_id=f"o-{uuid.uuid4().hex[:6]}", amount=amount, currency="usd",
        customer_email=f"buyer-{uuid.uuid4().hex[:6]}@example.com", payment_method="pm_card_visa",
    )  # fmt: skip


def intents_for(stripe_resource, tenant: str, key: str) -> list:
    return [
        intent
        for intent in payment_intents_of(stripe_resource, tenant)
        if intent.metadata.to_dict().get("idempotency_key") == key
    ]


def charge(api, ledger, tenant, key, payment, run_id="run-1"):
    return charge_once(
        api, ledger, tenant_id=tenant, idempotency_key=key, payment=payment, run_id=run_id, **LIVE
    )


def refund(api, ledger, tenant, key, intent_id, run_id="run-1", amount=500):
    return refund_once(
        api, ledger, tenant_id=tenant, idempotency_key=key, run_id=run_id,
        refund=RefundPayload(payment_intent_id=intent_id, amount=amount), **LIVE,
    )  # fmt: skip


# Redis gone between Stripe's answer and the breaker's note of it ----------------------------


@pytest.mark.parametrize("kind", ["payment", "refund"])
def test_redis_gone_after_stripe_answered_fails_nothing_and_acts_once(
    kind, redis_cut, stripe_relay, ledger, stripe_resource, tenant, key_prefix
):
    cut, guarded_redis = redis_cut
    guard = ProviderGuard(guarded_redis, "stripe", keys=IntakeKeys(key_prefix), rate="off")
    api = StripeApi(SECRET_KEY, api_base=stripe_relay.url, guard=guard)
    path = "/v1/payment_intents" if kind == "payment" else "/v1/refunds"
    intent_id = None
    if kind == "refund":
        intent_id = charge(stripe_resource.api(), ledger, tenant, "paid", buyer_payment())
        intent_id = intent_id.payment_intent_id
    stripe_relay.after_answer("POST", path, cut.cut)

    outcome = (
        charge(api, ledger, tenant, "k", buyer_payment())
        if kind == "payment"
        else refund(api, ledger, tenant, "k", intent_id)
    )
    # The retry that the old code made of the guard's ConnectionError, with Redis back.
    cut.restore()
    again = (
        charge(api, ledger, tenant, "k", buyer_payment())
        if kind == "payment"
        else refund(api, ledger, tenant, "k", intent_id)
    )

    assert not outcome.replayed and again.replayed
    if kind == "payment":
        assert [i.id for i in intents_for(stripe_resource, tenant, "k")] == [
            outcome.payment_intent_id
        ]
    else:
        assert refunds_of(stripe_resource, intent_id) == [500]


# The ledger gone between the answer and the record -------------------------------------------


@pytest.mark.parametrize("kind", ["payment", "refund"])
def test_a_record_that_fails_after_stripe_acted_is_settled_by_asking_stripe(
    kind, ledger_cut, stripe_relay, ledger, stripe_resource, tenant
):
    cut, cut_ledger = ledger_cut
    api = StripeApi(SECRET_KEY, api_base=stripe_relay.url)
    intent_id = None
    if kind == "refund":
        intent_id = charge(stripe_resource.api(), cut_ledger, tenant, "paid", buyer_payment())
        intent_id = intent_id.payment_intent_id
    payment = buyer_payment()
    path = "/v1/payment_intents" if kind == "payment" else "/v1/refunds"
    stripe_relay.after_answer("POST", path, cut.cut)

    def attempt():
        if kind == "payment":
            return charge(api, cut_ledger, tenant, "k", payment)
        return refund(api, cut_ledger, tenant, "k", intent_id)

    with pytest.raises(EffectUnrecorded, match="happened, but the effect ledger could not"):
        attempt()
    cut.restore()
    key = effect_key(kind, tenant, "k")
    assert cut_ledger.get(key)["status"] == "pending"  # in doubt: acted, never recorded

    retried = attempt()  # the request's retry, in the same run

    assert retried.replayed  # found at Stripe, recorded, not done again
    assert cut_ledger.get(key)["status"] == "done"
    if kind == "payment":
        assert [i.id for i in intents_for(stripe_resource, tenant, "k")] == [
            retried.payment_intent_id
        ]
    else:
        assert refunds_of(stripe_resource, intent_id) == [500]
        assert retried.remaining == 1000


# The worker killed between the answer and the record -----------------------------------------


@pytest.mark.parametrize("kind", ["payment", "refund"])
def test_a_worker_killed_after_stripe_acted_leaves_one_effect(
    kind, stripe_relay, ledger, postgres_url, stripe_resource, tenant
):
    intent_id = None
    if kind == "refund":
        paid = charge(stripe_resource.api(), ledger, tenant, "paid", buyer_payment())
        intent_id = paid.payment_intent_id
    payment = buyer_payment()
    payload = (
        payment.model_dump(mode="json")
        if kind == "payment"
        else {"payment_intent_id": intent_id, "amount": 500}
    )
    spec = {
        "kind": kind, "stripe": stripe_relay.url, "secret_key": SECRET_KEY,
        "ledger": postgres_url, "tenant": tenant, "key": "k", "run_id": "run-killed",
        "payload": payload,
    }  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.effect_worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
    )
    path = "/v1/payment_intents" if kind == "payment" else "/v1/refunds"
    # Stripe has acted; the worker dies before it hears so, let alone records it.
    stripe_relay.after_answer(
        "POST", path, lambda: os.kill(worker.pid, signal.SIGKILL), reply=False
    )
    assert worker.wait(timeout=120) == -signal.SIGKILL
    key = effect_key(kind, tenant, "k")
    assert (ledger.get(key)["status"], ledger.get(key)["run_id"]) == ("pending", "run-killed")

    api = stripe_resource.api()
    retried = (
        charge(api, ledger, tenant, "k", payment, run_id="run-retry")
        if kind == "payment"
        else refund(api, ledger, tenant, "k", intent_id, run_id="run-retry")
    )

    assert retried.replayed
    if kind == "payment":
        assert [i.id for i in intents_for(stripe_resource, tenant, "k")] == [
            retried.payment_intent_id
        ]
    else:
        assert refunds_of(stripe_resource, intent_id) == [500]


# E-mail, webhook, mint, transfer: the record fails after the provider answered -------------


def test_an_email_whose_record_failed_is_not_sent_again(ledger_cut, smtp_resource, mail_sink):
    cut, cut_ledger = ledger_cut
    to = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    smtp = AnswerThen(smtp_resource.sender(), "send", cut.cut)
    message = _message(smtp_resource.sender().from_address, to)
    key = f"email:t:{uuid.uuid4().hex[:8]}:payment_confirmation"

    with pytest.raises(EffectUnrecorded):
        send_email_once(smtp, cut_ledger, message, key=key, run_id="run-1")
    cut.restore()
    # SMTP keeps no record to ask: nobody can know whether it went, so it is not sent on a
    # guess; an operator decides (resend: true).
    with pytest.raises(PermanentError, match="without recording whether the message went out"):
        send_email_once(smtp_resource.sender(), cut_ledger, _message("x@example.com", to), key=key,
                        run_id="run-1")  # fmt: skip

    assert len(mail_sink.to(to)) == 1


def _message(sender: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, "Your tickets"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@queue-pipelines.invalid>"
    message.set_content("Thank you.")
    return message


def test_a_webhook_whose_record_failed_goes_again_under_the_same_id(ledger_cut):
    cut, cut_ledger = ledger_cut
    key = f"webhook:t:{uuid.uuid4().hex[:8]}:payment.succeeded"
    with WebhookReceiver("whsec_test") as receiver:
        sender = WebhookSender(secret="whsec_test")
        with pytest.raises(EffectUnrecorded):
            send_webhook_once(
                AnswerThen(sender, "deliver", cut.cut), cut_ledger, url=receiver.url,
                event_type="payment.succeeded", data={"n": 1}, key=key, run_id="run-1",
            )  # fmt: skip
        cut.restore()
        again = send_webhook_once(
            sender, cut_ledger, url=receiver.url, event_type="payment.succeeded",
            data={"n": 1}, key=key, run_id="run-1",
        )  # fmt: skip

    # Delivered twice, as one message: the receiver de-duplicates by webhook-id (the
    # Standard Webhooks contract), and processed it once.
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 2 and ids == {again.result["webhook_id"]}
    assert list(receiver.processed) == [again.result["webhook_id"]]


def test_a_mint_and_a_transfer_whose_record_failed_are_found_on_the_chain(
    ledger_cut, embedded_solana, metadata_store, tenant
):
    cut, cut_ledger = ledger_cut
    buyer = embedded_solana.payer().pubkey()  # custodial, so the service may move it on

    def mint(chain):
        return mint_ticket_once(
            chain, embedded_solana.payer(), cut_ledger, metadata_store.put, tenant_id=tenant,
            idempotency_key="m", payload=ticket_payload(buyer), run_id="run-1",
        )  # fmt: skip

    with pytest.raises(EffectUnrecorded):
        mint(AnswerThen(embedded_solana.chain(), "send", cut.cut))
    cut.restore()
    minted = mint(embedded_solana.chain())
    assert not minted.replayed or minted.signature is None  # adopted from the chain
    assert minted.owner == str(buyer)

    new_owner = Keypair().pubkey()

    def transfer(chain):
        return transfer_ticket_once(
            chain, embedded_solana.payer(), embedded_solana.custodial(), cut_ledger,
            tenant_id=tenant, idempotency_key="t", mint=minted.mint, to_wallet=str(new_owner),
            expected_owner=None, run_id="run-1", locks=None,
        )  # fmt: skip

    with pytest.raises(EffectUnrecorded):
        transfer(AnswerThen(embedded_solana.chain(), "send", cut.cut))
    cut.restore()
    moved = transfer(embedded_solana.chain())

    assert moved.to_owner == str(new_owner)
    assert moved.signature is None  # found done on the chain: no second transaction
    assert moved.already_held  # the chain cannot tell its own landed attempt from a holder
    assert cut_ledger.get(effect_key("transfer", tenant, "t"))["status"] == "done"


# What fails after the effect is a failed notice, never a failed effect --------------------


def test_a_notice_that_cannot_be_built_after_a_charge_is_a_failed_notice(
    ledger, stripe_resource, smtp_resource, mail_sink, tenant
):
    """A name the mail header cannot carry (the intake refuses such names; this one comes
    from a request older than that rule): the charge stands, the notice is reported failed
    and the operators are told."""
    settings = NotificationSettingsResource()
    notifier = Notifier(
        smtp=smtp_resource.sender(), webhooks=WebhookSender(secret="whsec_test"), ledger=ledger,
        profile_of=settings.profile, webhook_url_for=lambda _kind, _profile: None,
        operator_email=settings.operator_email, run_id="run-1",
    )  # fmt: skip
    payment = buyer_payment().model_copy(update={"customer_name": "Ada\r\nBcc: x@example.com"})
    charged = charge(stripe_resource.api(), ledger, tenant, "crlf", payment)

    told = notifier.tell(
        payment_notice(tenant, "crlf", payment, charged), f"payment {charged.payment_intent_id}"
    )

    assert (
        "e-mail payment_confirmation failed: unexpected ValueError" in told["notification_failed"]
    )
    assert ledger.get(effect_key("payment", tenant, "crlf"))["status"] == "done"
    assert mail_sink.to(str(payment.customer_email)) == []
    alerts = [m.get_body(("plain",)).get_content() for m in mail_sink.to(settings.operator_email)]
    assert any(charged.payment_intent_id in text and "and stands" in text for text in alerts)
