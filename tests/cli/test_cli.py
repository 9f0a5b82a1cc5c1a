"""`queue-pipelines` against a real Redis: enqueue one, enqueue a file, stats, dead letters."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time

from queue_pipelines.cli import main


def run(redis_url: str, prefix: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", redis_url, "--prefix", prefix, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_enqueue_payment_from_flags(redis_url, key_prefix, intake):
    code, out, _ = run(
        redis_url, key_prefix,
        "enqueue", "payment", "--tenant", "acme", "--key", "order-1", "--order-id", "1",
        "--amount", "2500", "--currency", "USD", "--email", "ada@example.com",
        "--payment-method", "pm_card_visa", "--priority", "5", "--json",
    )  # fmt: skip

    assert code == 0
    result = json.loads(out)
    assert result["request_key"] == "payment:acme:order-1"
    [(entry_id, fields)] = intake.client.xrange(intake.stream_key("payment"))
    assert entry_id == result["entry_id"]
    envelope = json.loads(fields["envelope"])
    assert envelope["priority"] == 5
    assert envelope["payload"]["currency"] == "usd"


def test_enqueue_refuses_invalid_input_and_writes_nothing(redis_url, key_prefix, intake):
    code, _, err = run(
        redis_url, key_prefix, "enqueue", "payment", "--amount", "-1", "--currency", "usd",
        "--email", "not-an-email", "--payment-method", "pm_card_visa", "--order-id", "1",
    )  # fmt: skip

    assert code == 2
    assert "payload.amount: Input should be greater than 0" in err
    assert "payload.customer_email" in err
    assert intake.client.exists(intake.stream_key("payment")) == 0


def test_enqueue_file_reports_bad_lines_and_enqueues_the_rest(
    redis_url, key_prefix, intake, tmp_path
):
    good = {
        "type": "refund", "version": 1, "tenant_id": "acme",
        "payload": {"payment_intent_id": "pi_1", "amount": 100},
    }  # fmt: skip
    lines = [json.dumps({**good, "idempotency_key": f"r{i}"}) for i in range(1203)]
    lines.insert(10, "{broken")
    lines.insert(20, json.dumps({**good, "idempotency_key": "v", "version": 3}))
    lines.insert(30, "")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")

    code, out, err = run(redis_url, key_prefix, "enqueue", "--file", str(jobs))

    assert code == 1
    assert out.strip() == "enqueued 1203, rejected 2"
    assert f"{jobs}:11: invalid JSON" in err
    assert f"{jobs}:21: unsupported envelope version 3" in err
    assert "... 1000 enqueued so far" in err  # progress on long files
    assert intake.client.xlen(intake.stream_key("refund")) == 1203


def test_queue_stats_and_dead_letters(redis_url, key_prefix, intake):
    intake.ensure_group("refund")
    entry_id = intake.client.xadd(intake.stream_key("refund"), {"envelope": "nope"})
    intake.read("refund", "0-0", 10)
    intake.dead_letter("refund", [entry_id], "rejected: invalid JSON")

    code, out, _ = run(redis_url, key_prefix, "queue", "stats", "--json")
    assert code == 0
    assert json.loads(out)["dead_letters"] == 1

    code, out, _ = run(redis_url, key_prefix, "queue", "stats")
    assert "dead letters: 1" in out and "refund" in out

    code, out, _ = run(redis_url, key_prefix, "queue", "dead-letters")
    assert entry_id in out and "rejected: invalid JSON" in out


def test_unreachable_redis_is_a_clear_error():
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", "redis://127.0.0.1:1/0", "queue", "stats"], out=out, err=err)
    assert code == 1
    assert "cannot reach the intake Redis at redis://127.0.0.1:1/0" in err.getvalue()


def test_installed_command_prints_help():
    result = subprocess.run(
        [sys.executable, "-m", "queue_pipelines.cli", "enqueue", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--file FILE" in result.stdout


def test_a_password_in_the_redis_url_is_not_printed():
    out, err = io.StringIO(), io.StringIO()
    url = "redis://app:s3cret-pw@127.0.0.1:1/0"
    code = main(["--redis-url", url, "queue", "stats"], out=out, err=err)
    assert code == 1
    assert "s3cret-pw" not in err.getvalue()
    assert "redis://app:***@127.0.0.1:1/0" in err.getvalue()


def test_request_show_follows_a_request_from_the_intake_to_its_outcome(
    redis_url, key_prefix, instance, resources, intake, tenant
):
    from tests.payments.test_payment_flow import payment
    from tests.support.harness import IntakeHarness

    intake.enqueue(payment(tenant, "shown"))
    intake.enqueue(payment(tenant, "refused", payment_method="pm_card_chargeCustomerFail"))
    key, refused = f"payment:{tenant}:shown", f"payment:{tenant}:refused"

    code, out, _ = run(redis_url, key_prefix, "request", "show", key)
    assert code == 0 and "entries on the intake:" in out and "outcome" not in out

    harness = IntakeHarness(instance, resources, "payment")
    [batch] = harness.tick()
    code, out, _ = run(redis_url, key_prefix, "request", "show", key, "--json")
    assert json.loads(out)["in_flight"] == {"batch": batch.run_key, "attempt": 1}
    harness.launch(batch)
    harness.drain()
    [run_id] = [r.run_id for r in harness.results]

    code, out, _ = run(redis_url, key_prefix, "request", "show", key)
    assert code == 0 and f"outcome: succeeded in run {run_id}" in out
    code, out, _ = run(redis_url, key_prefix, "request", "show", refused, "--json")
    report = json.loads(out)
    assert (
        report["outcome"]["status"] == "failed" and "card declined" in report["outcome"]["reason"]
    )
    assert [letter["run_id"] for letter in report["dead_letters"]] == [run_id]
    code, out, _ = run(redis_url, key_prefix, "request", "show", f"payment:{tenant}:never")
    assert code == 1 and "not known here" in out


class Waiting:
    """`queue-pipelines enqueue ... --wait` in a thread of its own, as a second terminal runs
    it, while the test drives the real sensor and job."""

    def __init__(self, redis_url: str, prefix: str, *argv: str):
        self.result: tuple[int, str, str] | None = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", run(redis_url, prefix, *argv)), daemon=True
        )
        self.thread.start()

    def ended(self, timeout: float = 60) -> tuple[int, str, str]:
        self.thread.join(timeout)
        assert self.result is not None, "enqueue --wait did not return"
        return self.result


def waiting(redis_url, prefix, intake, postgres_url, job_type, *argv) -> Waiting:
    """Start `enqueue JOB_TYPE ... --wait` and return once its entry is on the intake."""
    before = intake.client.xlen(intake.stream_key(job_type))
    started = Waiting(
        redis_url, prefix, "--ledger-url", postgres_url, "enqueue", job_type, *argv, "--wait"
    )
    deadline = time.monotonic() + 10
    while intake.client.xlen(intake.stream_key(job_type)) == before:
        assert time.monotonic() < deadline and started.thread.is_alive(), started.result
        time.sleep(0.05)
    return started


def test_enqueue_wait_prints_the_outcome_and_request_show_the_same(
    redis_url, key_prefix, instance, resources, intake, tenant, postgres_url
):
    """The PaymentIntent id the refund needs, where the operator looks: `enqueue --wait` and
    `request show`, read from the intake's outcome and the effect ledger's record."""
    from tests.support.harness import IntakeHarness

    card = ["--tenant", tenant, "--amount", "2500", "--currency", "usd"]
    card += ["--email", "ada@example.com", "--order-id", "1042"]
    paid = waiting(
        redis_url, key_prefix, intake, postgres_url, "payment",
        *card, "--key", "order-1042", "--payment-method", "pm_card_visa",
    )  # fmt: skip
    IntakeHarness(instance, resources, "payment").drain()
    code, out, err = paid.ended()

    assert code == 0, out + err
    assert f"waiting up to 120 s for payment:{tenant}:order-1042 to settle" in err
    [run_id] = re.findall(r"outcome: succeeded in run (\S+)", out)
    [intent] = re.findall(r"payment_intent_id: (pi_\w+)", out)
    assert "  status: succeeded" in out and "  amount: 25.00 USD" in out
    assert re.search(r"customer_id: cus_\w+", out)

    # Everything --wait printed about the request, `request show` prints too. Its batch line
    # is left out of the comparison: whether the batch still shows depends on the sensor's
    # next tick, which clears it, racing with the two reads.
    def without_batch(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("  batch ")]

    shown = without_batch(out[out.index(f"payment:{tenant}:order-1042\n") :])

    code, out, _ = run(
        redis_url, key_prefix, "--ledger-url", postgres_url,
        "request", "show", f"payment:{tenant}:order-1042",
    )  # fmt: skip
    assert code == 0 and without_batch(out) == shown
    code, out, _ = run(
        redis_url, key_prefix, "--ledger-url", postgres_url,
        "request", "show", f"payment:{tenant}:order-1042", "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert report["outcome"]["run_id"] == run_id
    assert report["effect"]["payment_intent_id"] == intent
    assert report["effect"]["amount"] == 2500 and report["effect"]["currency"] == "usd"

    # The refund the README's next step asks for, with the id just printed.
    refunded = waiting(
        redis_url, key_prefix, intake, postgres_url, "refund",
        "--tenant", tenant, "--key", "refund-1042", "--payment-intent", intent,
        "--amount", "1000",
    )  # fmt: skip
    IntakeHarness(instance, resources, "refund").drain()
    code, out, err = refunded.ended()
    assert code == 0, out + err
    assert re.search(r"refund_id: re_\w+", out)
    assert f"payment_intent_id: {intent}" in out
    assert "amount: 10.00 USD" in out and "remaining: 15.00 USD" in out

    # A declined card: exit 1, with Stripe's reason and the dead letter.
    declined = waiting(
        redis_url, key_prefix, intake, postgres_url, "payment",
        *card, "--key", "order-1043", "--payment-method", "pm_card_chargeCustomerFail",
    )  # fmt: skip
    IntakeHarness(instance, resources, "payment").drain()
    code, out, err = declined.ended()
    assert code == 1, out + err
    assert "outcome: failed in run" in out and "card declined" in out
    assert "dead letter " in out and "payment_intent_id" not in out


def test_enqueue_wait_times_out_and_says_where_the_request_is(
    redis_url, key_prefix, intake, tenant, postgres_url
):
    """No sensor runs here: the request is still on the intake when the wait ends."""
    code, out, err = run(
        redis_url, key_prefix, "--ledger-url", postgres_url,
        "enqueue", "payment", "--tenant", tenant, "--key", "slow", "--amount", "100", "--order-id", "9",
        "--currency", "usd", "--email", "ada@example.com", "--payment-method", "pm_card_visa",
        "--wait", "--timeout", "0.5",
    )  # fmt: skip
    assert code == 3, out + err
    assert "not settled within 0.5 s" in err
    assert f"request show payment:{tenant}:slow" in err
    assert f"payment:{tenant}:slow\n  entries on the intake: " in out

    code, out, err = run(
        redis_url, key_prefix, "enqueue", "payment", "--tenant", tenant, "--amount", "-1",
        "--wait",
    )  # fmt: skip
    assert code == 2 and "payload.amount" in err  # bad input: nothing enqueued, nothing waited
    code, out, err = run(redis_url, key_prefix, "enqueue", "--file", "-", "--wait")
    assert code == 2 and "--wait waits for one request" in err


def test_enqueue_wait_reports_an_entry_rejected_for_its_reused_key(
    redis_url, key_prefix, instance, resources, intake, tenant, postgres_url
):
    """The key was first used for another payload: the entry is dead-lettered on its own, not
    the request (which succeeded): --wait says so and exits 1."""
    from tests.support.harness import IntakeHarness

    card = ["--tenant", tenant, "--key", "reused", "--currency", "usd", "--order-id", "7"]
    card += ["--email", "ada@example.com", "--payment-method", "pm_card_visa"]
    first = waiting(
        redis_url, key_prefix, intake, postgres_url, "payment", *card, "--amount", "700"
    )
    IntakeHarness(instance, resources, "payment").drain()
    assert first.ended()[0] == 0

    second = waiting(
        redis_url, key_prefix, intake, postgres_url, "payment", *card, "--amount", "900"
    )
    IntakeHarness(instance, resources, "payment").drain()
    code, out, err = second.ended()
    assert code == 1, out + err
    assert "was first used for a different payment request" in out
