"""Names and addresses a mail cannot carry are refused at the intake, before any charge (issue
#17, point 5): by the gateway, by `queue-pipelines enqueue`, and by the intake sensor (a dead
letter with the reason). Bytes that are not UTF-8 are dead-lettered with a reason, never a
crash (point 10). An internationalized domain is delivered, in its IDNA form."""

from __future__ import annotations

import io
import json

import pytest
import redis

from queue_pipelines.cli import main
from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import JWTSettings
from queue_pipelines.intake.streams import ENVELOPE_FIELD
from tests.gateway.test_jobs import (
    SECRET,
    claims,
    gateway_settings,
    hs256,
    payment_envelope,
    post,
)
from tests.intake.test_bad_input import wire
from tests.support.gateway_server import serve
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.stripe_sandbox import payment_intents_of

CRLF_NAME = "Ada\r\nBcc: everyone@example.com"


def cli(redis_url: str, prefix: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", redis_url, "--prefix", prefix, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def gateway(redis_url, instance, key_prefix):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="HS256", key=SECRET))
    with serve(build_app(settings, client, instance)) as url:
        yield url
    client.close()


def test_gateway_answers_400_naming_the_field_and_enqueues_nothing(
    gateway, intake, key_prefix, tenant
):
    client = intake.client
    token = hs256(claims(tenant))
    for field, value, says in (
        ("customer_name", CRLF_NAME, "U+000D (carriage return)"),
        ("customer_name", "Ada\x00", "U+0000 (NUL)"),
        ("customer_email", "jörg@example.com", "the part before the @ must be ASCII"),
    ):
        reply = post(gateway, payment_envelope(tenant, **{field: value}), token)
        assert reply.status_code == 400, reply.text
        [problem] = reply.json()["fields"]
        assert problem["field"] == f"payload.{field}"
        assert says in problem["message"]
    assert client.xlen(f"{key_prefix}:intake:payment") == 0

    reply = post(gateway, payment_envelope(tenant, customer_email="ada@bücher.de"), token)
    assert reply.status_code == 202, reply.text
    [(_, fields)] = client.xrange(f"{key_prefix}:intake:payment")
    assert json.loads(fields["envelope"])["payload"]["customer_email"] == "ada@xn--bcher-kva.de"


def test_enqueue_refuses_a_name_with_a_line_break_and_writes_nothing(redis_url, key_prefix, intake):
    base = [
        "enqueue", "payment", "--order-id", "1", "--amount", "2500", "--currency", "usd",
        "--payment-method", "pm_card_visa",
    ]  # fmt: skip
    code, _, err = cli(
        redis_url, key_prefix, *base, "--email", "ada@example.com", "--name", CRLF_NAME
    )
    assert code == 2
    assert "payload.customer_name: holds U+000D (carriage return) at position 3" in err
    assert "\r" not in err

    code, _, err = cli(redis_url, key_prefix, *base, "--email", "jörg@example.com")
    assert code == 2 and "payload.customer_email: the part before the @ must be ASCII" in err
    assert intake.client.exists(intake.stream_key("payment")) == 0

    code, out, err = cli(redis_url, key_prefix, *base, "--email", "ada@bücher.de", "--json")
    assert code == 0, err
    [(_, fields)] = intake.client.xrange(intake.stream_key("payment"))
    assert json.loads(fields["envelope"])["payload"]["customer_email"] == "ada@xn--bcher-kva.de"


def test_the_sensor_dead_letters_such_entries_before_any_charge_and_mails_the_rest(
    instance, resources, intake, tenant, stripe_resource, mail_sink
):
    """Written straight to Redis (no validation on the way in): the sensor refuses them.
    The valid one, with a name full of address specials and an internationalized domain,
    is charged and mailed to exactly its buyer."""
    stream = intake.stream_key("payment")
    intake.ensure_group("payment")
    bad = {
        "CR LF name": wire(tenant, "crlf", payload={"customer_name": CRLF_NAME}),
        "ESC name": wire(tenant, "esc", payload={"customer_name": "\x1b]0;owned\x07Ada"}),
        "non-ASCII mailbox": wire(tenant, "idn", payload={"customer_email": "jörg@bücher.de"}),
        "line break in the id": wire(tenant, "id", id="ref\n42"),
    }
    ids = {name: intake.client.xadd(stream, {ENVELOPE_FIELD: json.dumps(e)}) for name, e in bad.items()}  # fmt: skip
    buyer = "ada@bücher.de"
    good = wire(
        tenant, "good", payload={"customer_email": buyer, "customer_name": "Zoë, x@evil.example"}
    )
    intake.client.xadd(stream, {ENVELOPE_FIELD: json.dumps(good)})

    harness = IntakeHarness(instance, resources, "payment")
    assert harness.drain() == 1

    letters = {letter["entry_id"]: letter["reason"] for letter in intake.dead_letters()}
    assert set(letters) == set(ids.values())
    assert letters[ids["CR LF name"]].startswith(
        "rejected: payload.customer_name: holds U+000D (carriage return) at position 3"
    )
    assert "payload.customer_name: holds U+001B (escape)" in letters[ids["ESC name"]]
    assert (
        "payload.customer_email: the part before the @ must be ASCII"
        in (letters[ids["non-ASCII mailbox"]])
    )
    assert "rejected: id: holds U+000A (line feed)" in letters[ids["line break in the id"]]
    # Only the valid request was charged; it succeeded, its mail went to its buyer alone.
    [intent] = payment_intents_of(stripe_resource, tenant)
    assert intent.metadata.to_dict()["idempotency_key"] == "good"
    [row] = outcome_rows(harness.results[0])
    assert row["status"] == "succeeded" and not row.get("notification_failed")
    [mail] = mail_sink.to("ada@xn--bcher-kva.de")
    assert [(a.display_name, a.addr_spec) for a in mail["To"].addresses] == [
        ("Zoë, x@evil.example", "ada@xn--bcher-kva.de")
    ]
    recipients = {a.addr_spec for m in mail_sink.handler.received for a in m["To"].addresses}
    assert "x@evil.example" not in recipients
    assert intake.client.xlen(stream) == 0


def test_entries_holding_bytes_that_are_not_utf8_are_dead_lettered_with_a_reason(
    instance, resources, intake, tenant, redis_url, key_prefix
):
    """Raw XADDs of invalid UTF-8 (and a JSON escape of a lone surrogate, which decodes to
    the same thing): each is dead-lettered with a reason, the tick never fails, the valid
    entry behind them runs, and the DLQ CLI shows them all."""
    stream = intake.stream_key("payment")
    intake.ensure_group("payment")
    raw_client = redis.Redis.from_url(redis_url)  # writes bytes as they are
    good = json.dumps(wire(tenant, "good-name")).encode()
    bad_name = good.replace(b'"good-name"', b'"bad-\xff\xfe-name"', 1)
    escaped = json.dumps(wire(tenant, "esc", payload={"metadata": {"note": "\udcff"}})).encode()
    poison = {
        "invalid bytes in a value": good.replace(b'"eur"', b'"e\xffr"'),
        "invalid bytes in the key": bad_name,
        "a lone surrogate escape": escaped,
    }
    ids = {
        name: raw_client.xadd(stream, {ENVELOPE_FIELD: raw}).decode()
        for name, raw in poison.items()
    }
    ids["a field name of invalid bytes"] = raw_client.xadd(stream, {b"\xffenv": b"x"}).decode()
    raw_client.xadd(stream, {ENVELOPE_FIELD: good})
    raw_client.close()

    harness = IntakeHarness(instance, resources, "payment")
    assert harness.drain() == 1
    assert harness.results[0].success

    letters = {letter["entry_id"]: letter for letter in intake.dead_letters()}
    assert set(letters) == set(ids.values())
    for name in ("invalid bytes in a value", "invalid bytes in the key"):
        assert letters[ids[name]]["reason"].startswith("rejected: envelope is not valid UTF-8")
    assert letters[ids["a lone surrogate escape"]]["reason"].startswith(
        "rejected: envelope is not valid UTF-8: payload.metadata.note holds a lone surrogate"
    )
    assert "no 'envelope' field" in letters[ids["a field name of invalid bytes"]]["reason"]
    assert intake.client.xlen(stream) == 0

    code, out, err = cli(redis_url, key_prefix, "dlq", "list")
    assert code == 0, err
    assert all(entry_id in out for entry_id in ids.values())
    assert "\\udcff" in out  # the undecodable byte, escaped
    code, out, err = cli(redis_url, key_prefix, "dlq", "list", "--json")
    assert code == 0, err
    assert len(json.loads(out)) == len(ids)
