"""`queue-pipelines` against a real Redis: enqueue one, enqueue a file, stats, dead letters."""

from __future__ import annotations

import io
import json
import subprocess
import sys

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
    from tests.support.harness import IntakeHarness
    from tests.test_payment_flow import payment

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
