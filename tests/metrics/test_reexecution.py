"""A re-execution of a settled batch run, from the UI's "Re-execute all", counts as a run
but counts none of its requests again (docs/metrics.md): real payment and notification runs
through the intake sensor, then re-executed, read by the same RunTotals as /metrics."""

from __future__ import annotations

from collections import Counter

from queue_pipelines.metrics.run_totals import RunTotals, Totals
from tests.notifications.test_jobs import notification
from tests.payments.test_payment_flow import payment
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.reexecution import reexecute_all

DECLINED = "pm_card_chargeCustomerFail"


def request_counts(totals: Totals) -> dict[str, Counter]:
    """Every request-derived counter (not the run ones), as plain counters."""
    return {
        "items": Counter(totals.items),
        "emails": Counter(totals.emails),
        "webhooks": Counter(totals.webhooks),
        "replays": Counter(totals.replays),
        **{name: Counter(counter) for name, counter in totals.counted.items()},
        **{f"waits {key}": Counter({"count": h.count}) for key, h in totals.waits.items()},
    }


def grown(before: dict[str, Counter], after: dict[str, Counter]) -> dict[str, Counter]:
    """What was added between the two, per counter, leaving out those unchanged."""
    out = {}
    for name, counter in after.items():
        delta = counter.copy()
        delta.subtract(before.get(name, Counter()))
        delta = Counter({key: n for key, n in delta.items() if n})
        if delta:
            out[name] = delta
    return out


def settle_then_reexecute(instance, resources, intake, job_type, envelopes, monkeypatch):
    """Drain `envelopes` through the intake sensor into one run, then re-execute that run;
    returns the totals before, after the run and after the re-execution, and its rows."""
    totals = RunTotals(instance)
    before = totals.refresh()
    intake.enqueue_many(envelopes)
    harness = IntakeHarness(instance, resources, job_type)
    assert harness.drain() == 1
    [original] = harness.results
    after_run = totals.refresh()
    success, rows = reexecute_all(instance, resources, original.run_id, monkeypatch)
    assert not success  # a request of it stays failed, so the re-execution fails too
    return before, after_run, totals.refresh(), original, rows


def test_reexecuting_a_settled_payment_run_counts_the_run_not_its_requests(
    instance, resources, intake, tenant, stripe_resource, mail_sink, monkeypatch
):
    buyer = f"{tenant}@example.com"
    before, after_run, after_reexec, original, rows = settle_then_reexecute(
        instance,
        resources,
        intake,
        "payment",
        [
            payment(tenant, "paid", amount=1300, customer_email=buyer),
            payment(tenant, "declined", customer_email=buyer, payment_method=DECLINED),
        ],
        monkeypatch,
    )

    # The run counted its two requests: one charged (and e-mailed), one declined.
    first = grown(request_counts(before), request_counts(after_run))
    assert first["items"] == {("payment", "success"): 1, ("payment", "failure"): 1}
    assert first["payments"] == {("usd", "succeeded"): 1, ("usd", "failed"): 1}
    assert first["payment_amounts"] == {"usd": 1300}
    assert first["emails"] == {"sent": 1}
    # The re-execution found both settled: marked so on its page, and counted nowhere.
    assert [(r["request"], r["status"], r["settled"]) for r in rows] == [
        ("declined", "failed", "earlier"),
        ("paid", "succeeded", "earlier"),
    ]
    assert "card declined" in rows[0]["reason"]
    assert [r.get("settled") for r in outcome_rows(original)] == [None, None]
    assert grown(request_counts(after_run), request_counts(after_reexec)) == {}
    # It is a run of its own, which failed as its parent did.
    assert after_reexec.runs - after_run.runs == Counter({("payment", "failure"): 1})
    assert after_reexec.failures - after_run.failures == Counter({("payment", "permanent"): 1})
    assert after_reexec.durations["payment"].count == after_run.durations["payment"].count + 1


def test_reexecuting_a_settled_notification_run_counts_no_email_again(
    instance, resources, intake, tenant, mail_sink, monkeypatch
):
    buyer = f"{tenant}@example.com"
    good = {"buyer_name": "Ada", "order_id": "7", "amount": "$1.00", "reason": "card declined"}
    broken = {key: value for key, value in good.items() if key != "reason"}
    before, after_run, after_reexec, _original, rows = settle_then_reexecute(
        instance,
        resources,
        intake,
        "notification",
        [
            notification(tenant, "sent", "payment_failed", good, buyer),
            notification(tenant, "broken", "payment_failed", broken, buyer),
        ],
        monkeypatch,
    )

    first = grown(request_counts(before), request_counts(after_run))
    assert first["items"] == {("notification", "success"): 1, ("notification", "failure"): 1}
    assert first["emails"] == {"sent": 1, "failed": 1}
    assert [(r["request"], r["status"], r["settled"]) for r in rows] == [
        ("broken", "failed", "earlier"),
        ("sent", "succeeded", "earlier"),
    ]
    assert grown(request_counts(after_run), request_counts(after_reexec)) == {}
    assert after_reexec.runs - after_run.runs == Counter({("notification", "failure"): 1})
    assert len(mail_sink.to(buyer)) == 1
