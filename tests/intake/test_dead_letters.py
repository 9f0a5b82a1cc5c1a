"""Dead letters on a real Redis: the `dlq` commands, their filters, replay with the original
idempotency key, purge's confirmation, and dead letters removed once their request succeeds."""

from __future__ import annotations

import io
import json

from queue_pipelines.cli import main
from queue_pipelines.intake.dead_letters import parse_duration
from queue_pipelines.intake.schema import envelope_from_dict


def payment(tenant: str, key: str, amount: int = 1000) -> dict:
    return {
        "type": "payment", "version": 1, "tenant_id": tenant, "idempotency_key": key,
        "payload": {"order_id": "1", "amount": amount, "currency": "usd",
                    "customer_email": "ada@example.com", "payment_method": "pm_card_visa"},
    }  # fmt: skip


def run(redis_url, prefix, *argv, stdin: str = ""):
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["--redis-url", redis_url, "--prefix", prefix, *argv],
        out=out,
        err=err,
        stdin=io.StringIO(stdin),
    )
    return code, out.getvalue(), err.getvalue()


def dead_letter_request(intake, data: dict, reason: str) -> str:
    """Enqueue a request, read it as the sensor does, and dead-letter it with `reason`."""
    envelope = envelope_from_dict(data)
    [entry_id] = intake.enqueue_many([envelope])
    intake.read(envelope.type, "0-0", count=100)
    intake.track(envelope.type, envelope.request_key, [entry_id])
    intake.dead_letter_request(envelope.type, envelope.request_key, reason, run_id="r-1")
    return envelope.request_key


def test_list_filters_by_type_tenant_reason_and_age(redis_url, key_prefix, intake):
    dead_letter_request(intake, payment("acme", "a1"), "run r failed in step charge: card declined")
    dead_letter_request(intake, payment("globex", "g1"), "run r failed in step charge: timeout")
    intake.client.xadd(intake.stream_key("refund"), {"envelope": "{broken"})
    intake.read("refund", "0-0", count=10)
    [(entry_id, _)] = intake.client.xrange(intake.stream_key("refund"))
    intake.dead_letter("refund", [entry_id], "rejected: invalid JSON")

    def listed(*flags):
        code, out, err = run(redis_url, key_prefix, "dlq", "list", "--json", *flags)
        assert code == 0, err
        return [(letter["job_type"], letter["tenant_id"]) for letter in json.loads(out)]

    assert listed() == [("refund", None), ("payment", "globex"), ("payment", "acme")]
    assert listed("--type", "payment") == [("payment", "globex"), ("payment", "acme")]
    assert listed("--tenant", "acme") == [("payment", "acme")]
    assert listed("--reason", "DECLINED") == [("payment", "acme")]
    assert listed("--older-than", "1h") == []
    assert len(listed("--newer-than", "1h")) == 3
    # The old name stays: `queue dead-letters` is `dlq list`.
    code, out, _ = run(redis_url, key_prefix, "queue", "dead-letters", "--tenant", "globex")
    assert code == 0 and "globex" in out and "acme" not in out


def test_show_prints_the_original_entry(redis_url, key_prefix, intake):
    dead_letter_request(intake, payment("acme", "s1"), "run r failed: x")
    [letter] = intake.dead_letters()

    code, out, _ = run(redis_url, key_prefix, "dlq", "show", letter["id"], "--json")

    assert code == 0
    shown = json.loads(out)
    assert json.loads(shown["fields"]["envelope"])["idempotency_key"] == "s1"
    assert run(redis_url, key_prefix, "dlq", "show", "1-1")[0] == 1


def test_replay_reenqueues_the_original_envelope_and_removes_the_dead_letter(
    redis_url, key_prefix, intake
):
    request_key = dead_letter_request(intake, payment("acme", "order-7"), "run r failed: x")
    [letter] = intake.dead_letters()

    code, out, err = run(redis_url, key_prefix, "dlq", "replay", letter["id"], "--yes", "--json")

    assert code == 0, err
    [replayed] = json.loads(out)["replayed"]
    assert replayed["request_key"] == request_key
    [(entry_id, fields)] = intake.client.xrange(intake.stream_key("payment"))
    assert entry_id == replayed["entry_id"]
    envelope = json.loads(fields["envelope"])
    assert (envelope["tenant_id"], envelope["idempotency_key"]) == ("acme", "order-7")
    assert intake.dead_letters() == []


def test_replay_of_a_fixed_request_validates_the_change(redis_url, key_prefix, intake):
    dead_letter_request(intake, payment("acme", "fix-1", amount=5), "run r failed: too small")
    [letter] = intake.dead_letters()

    code, _, err = run(
        redis_url, key_prefix, "dlq", "replay", letter["id"], "--yes", "--payload",
        '{"amount": -3}',
    )  # fmt: skip
    assert code == 1 and "payload.amount" in err
    assert len(intake.dead_letters()) == 1  # a replay that does not validate keeps it
    # Not JSON: refused before the confirmation prompt, with the reason.
    code, _, err = run(redis_url, key_prefix, "dlq", "replay", letter["id"], "--payload", "{amount")
    assert code == 2 and "--payload is not JSON" in err and "?" not in err

    code, _, err = run(
        redis_url, key_prefix, "dlq", "replay", letter["id"], "--yes", "--payload",
        '{"amount": 700}',
    )  # fmt: skip
    assert code == 0, err
    [(_, fields)] = intake.client.xrange(intake.stream_key("payment"))
    assert json.loads(fields["envelope"])["payload"]["amount"] == 700


def test_purge_asks_unless_yes(redis_url, key_prefix, intake):
    dead_letter_request(intake, payment("acme", "p1"), "run r failed: x")
    dead_letter_request(intake, payment("globex", "p2"), "run r failed: x")

    code, _, err = run(redis_url, key_prefix, "dlq", "purge", "--tenant", "acme", stdin="n\n")
    assert code == 1 and "purge for good 1 dead letter(s)?" in err
    assert len(intake.dead_letters()) == 2
    # Nothing to say yes with (no terminal, no input) is a no.
    assert run(redis_url, key_prefix, "dlq", "purge", "--all")[0] == 1
    # Neither ids nor filters: refused rather than taken as "everything".
    assert run(redis_url, key_prefix, "dlq", "purge", "--yes")[0] == 2

    code, out, _ = run(redis_url, key_prefix, "dlq", "purge", "--tenant", "acme", stdin="y\n")
    assert code == 0 and "purged 1" in out
    assert [letter["request_key"] for letter in intake.dead_letters()] == ["payment:globex:p2"]
    code, out, _ = run(redis_url, key_prefix, "dlq", "purge", "--all", "--yes", "--json")
    assert json.loads(out) == {"purged": 1}
    assert intake.dead_letters() == []


def test_a_later_success_of_the_request_resolves_its_dead_letters(intake):
    request_key = dead_letter_request(intake, payment("acme", "r1"), "run a failed: killed")
    other = dead_letter_request(intake, payment("acme", "r2"), "run b failed: declined")
    assert len(intake.dead_letters()) == 2

    # The request is enqueued again and its new run succeeds: settle is the success path.
    envelope = envelope_from_dict(payment("acme", "r1"))
    [entry_id] = intake.enqueue_many([envelope])
    intake.read("payment", "0-0", count=10)
    intake.track("payment", request_key, [entry_id])
    assert intake.settle("payment", request_key) == 1

    assert [letter["request_key"] for letter in intake.dead_letters()] == [other]


def test_acking_a_duplicate_of_a_succeeded_request_resolves_its_dead_letters(intake):
    request_key = dead_letter_request(intake, payment("acme", "d1"), "run a failed: killed")
    [entry_id] = intake.enqueue_many([envelope_from_dict(payment("acme", "d1"))])
    intake.read("payment", "0-0", count=10)

    assert intake.ack("payment", [entry_id], request_key) == 1

    assert intake.dead_letters() == []
    assert intake.resolve_dead_letters("payment", request_key) == 0


def test_stats_show_the_oldest_waiting_request_per_type_and_tenant(redis_url, key_prefix, intake):
    intake.enqueue_many([envelope_from_dict(payment("acme", f"w{i}")) for i in range(3)])
    intake.enqueue_many([envelope_from_dict(payment("globex", "w9"))])
    intake.client.xadd(intake.stream_key("payment"), {"envelope": "{broken"})
    intake.read("payment", "0-0", count=2)

    stats = intake.stats().as_dict()["streams"]["payment"]

    assert stats["oldest_waiting_age_seconds"] >= stats["oldest_pending_age_seconds"] >= 0
    assert {t: w["waiting"] for t, w in stats["tenants"].items()} == {
        "acme": 3,
        "globex": 1,
        "?": 1,
    }
    assert stats["tenants"]["acme"]["oldest_age_seconds"] >= 0
    assert stats["tenants_complete"] is True
    partial = intake.stats(scan_limit=2).as_dict()["streams"]["payment"]
    assert partial["tenants_complete"] is False
    assert partial["tenants"] == {
        "acme": {
            "waiting": 2,
            "oldest_age_seconds": partial["tenants"]["acme"]["oldest_age_seconds"],
        }
    }

    code, out, _ = run(redis_url, key_prefix, "queue", "stats")
    assert code == 0
    assert "oldest waiting" in out
    assert "payment acme" in out and "payment globex" in out


def test_durations():
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("7d") == 7 * 86400
