"""`queue-pipelines enqueue` and `queue stats` on the in-memory intake: the command line as
the CLI parses it, flags into a payload (a customer's own e-mail and name), the checks that
answer 2 before anything is enqueued, a JSON Lines file with bad lines reported by number,
what is printed, and a URL's password hidden. The same commands against a real Redis, and
`--wait` until a run settles, are tests/cli/test_cli.py's."""

from __future__ import annotations

import io
import json

import pytest

from queue_pipelines.cli import build_parser, without_password
from queue_pipelines.intake.cli import EXIT_TIMED_OUT, run_enqueue, run_queue
from queue_pipelines.intake.entries import ENVELOPE_FIELD
from queue_pipelines.intake.schema import parse_envelope
from tests.support.memory_intake import MemoryIntake


def enqueue(intake: MemoryIntake, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["enqueue", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run_enqueue(intake, args, out, err)
    return code, out.getvalue(), err.getvalue()


def envelopes(intake: MemoryIntake, job_type: str) -> list:
    return [parse_envelope(entry.raw_envelope) for entry in intake.read(job_type, "0-0", 100)]


def test_flags_make_the_payload_and_the_line_says_what_was_enqueued(intake):
    code, out, _ = enqueue(
        intake,
        "payment",
        "--tenant=acme",
        "--key=o-1",
        "--priority=-5",
        "--order-id=o-1",
        "--amount=1050",
        "--currency=usd",
        "--email=ada@example.com",
        "--payment-method=pm_card_visa",
    )

    assert code == 0
    (envelope,) = envelopes(intake, "payment")
    assert (envelope.tenant_id, envelope.idempotency_key, envelope.priority) == ("acme", "o-1", -5)
    assert (envelope.payload.amount, envelope.payload.customer_email) == (1050, "ada@example.com")
    assert out.startswith("enqueued payment 'o-1' for 10.50 USD as entry ")
    assert out.rstrip().endswith(f"on {intake.stream_key('payment')}")


def test_a_customers_email_and_name_flags_fill_its_own_fields_over_the_payload(intake):
    code, out, _ = enqueue(
        intake,
        "customer",
        "--action=create",
        "--email=ada@example.com",
        "--name=Ada",
        "--payload",
        json.dumps({"email": "other@example.com", "metadata": {"plan": "pro"}}),
        "--json",
    )

    assert code == 0
    (envelope,) = envelopes(intake, "customer")
    assert (envelope.payload.email, envelope.payload.name) == ("ada@example.com", "Ada")
    assert envelope.payload.metadata == {"plan": "pro"}
    printed = json.loads(out)
    assert printed["request_key"] == envelope.request_key and printed["entry_id"]


def test_without_a_key_each_request_gets_its_own(intake):
    for _ in range(2):
        enqueue(intake, "refund", "--payment-intent=pi_1")

    keys = {envelope.idempotency_key for envelope in envelopes(intake, "refund")}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ((), "give a job TYPE"),
        (("payment", "--amount=100"), "error: "),
        (("payment", "--payload=[1]"), "--payload must be a JSON object"),
        (("payment", "--payload={"), "error: "),
        (("payment", "--timeout=0"), "--timeout must be more than 0"),
        (("payment", "--file=x.jsonl"), "either TYPE with flags or --file"),
        (("--file=x.jsonl", "--wait"), "--wait waits for one request"),
    ],
)
def test_bad_input_answers_2_and_enqueues_nothing(intake, argv, said):
    code, out, err = enqueue(intake, *argv)

    assert (code, out) == (2, "")
    assert err.startswith("error: ") and said in err
    assert intake.stream_ids("payment") == []


def test_a_file_enqueues_its_valid_lines_and_names_the_bad_ones(intake, tmp_path):
    good = {
        "type": "refund",
        "version": 1,
        "tenant_id": "acme",
        "idempotency_key": "r-1",
        "payload": {"payment_intent_id": "pi_1"},
    }
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "",
                "{not json",
                json.dumps({**good, "type": "haircut"}),
                json.dumps({**good, "idempotency_key": "r-2"}),
            ]
        )
        + "\n"
    )

    code, out, err = enqueue(intake, f"--file={path}")

    assert code == 1  # a line was rejected
    assert out == "enqueued 2, rejected 2\n"
    assert f"{path}:3: invalid JSON" in err and f"{path}:4: " in err
    assert [e.idempotency_key for e in envelopes(intake, "refund")] == ["r-1", "r-2"]


def test_wait_gives_up_after_the_timeout_with_its_own_exit_code(intake):
    code, out, err = enqueue(intake, "refund", "--payment-intent=pi_1", "--wait", "--timeout=0.01")

    assert code == EXIT_TIMED_OUT
    assert out.startswith("enqueued refund ")
    assert "not settled within 0.01 s" in err


def test_queue_stats_shows_each_stream_and_what_waits_per_tenant(intake):
    enqueue(intake, "refund", "--tenant=acme", "--payment-intent=pi_1")
    # A tenant no envelope would accept (a terminal escape) is counted as '?', never printed.
    intake.add_raw("refund", {ENVELOPE_FIELD: json.dumps({"tenant_id": "evil\x1b[2J"})})
    out = io.StringIO()

    assert run_queue(intake, build_parser().parse_args(["queue", "stats"]), out) == 0
    text = out.getvalue()
    assert "refund acme" in text and "refund ?" in text and "dead letters: 0" in text
    assert "\x1b" not in text

    out = io.StringIO()
    run_queue(intake, build_parser().parse_args(["queue", "stats", "--json"]), out)
    refunds = json.loads(out.getvalue())["streams"]["refund"]
    assert refunds["length"] == 2
    assert {tenant: w["waiting"] for tenant, w in refunds["tenants"].items()} == {"?": 1, "acme": 1}


def test_a_password_in_a_url_is_never_shown():
    assert without_password("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert without_password("postgresql://qp:s3cret@db/qp") == "postgresql://qp:***@db/qp"
    assert without_password("redis://host:6379/0") == "redis://host:6379/0"
