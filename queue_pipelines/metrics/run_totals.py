"""Totals over the finished runs in the Dagster instance, read incrementally.

A finished run never changes, so each is read once: every refresh asks the run storage for
runs that reached a terminal state since the last one (with an overlap, for clocks of other
writers), reads their step events, and adds them in. A new process starts from nothing and
reads the whole history once, so the totals are the same after a restart.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from queue_pipelines import tags
from queue_pipelines.metrics import conventions as conv

TERMINAL = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_STEP_EVENTS = {dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE}


@dataclass
class DurationHistogram:
    buckets: tuple[float, ...] = conv.DURATION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(conv.DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip([*self.buckets, float("inf")], self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class Totals:
    runs: Counter = field(default_factory=Counter)  # (queue, status)
    failures: Counter = field(default_factory=Counter)  # (queue, reason)
    durations: dict[str, DurationHistogram] = field(default_factory=dict)
    payments: Counter = field(default_factory=Counter)  # (currency, status)
    payment_amounts: Counter = field(default_factory=Counter)  # currency
    refunds: Counter = field(default_factory=Counter)  # (currency, status)
    refund_amounts: Counter = field(default_factory=Counter)  # currency
    mints: Counter = field(default_factory=Counter)  # status
    transfers: Counter = field(default_factory=Counter)  # status
    emails: Counter = field(default_factory=Counter)  # "sent" / "failed"
    webhooks: Counter = field(default_factory=Counter)
    wallet_balances: dict[str, tuple[float, float]] = field(default_factory=dict)  # (time, SOL)


def _value(metadata: dict[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _payload_currency(run: dg.DagsterRun) -> str:
    for op in (run.run_config or {}).get("ops", {}).values():
        currency = (op.get("config") or {}).get("payload", {}).get("currency")
        if currency:
            return str(currency).lower()
    return "unknown"


def _failure_reason(failures: list) -> str:
    if not failures:
        return "run_failure"  # the run died outside any step (launcher, worker lost)
    data = failures[-1].dagster_event.step_failure_data
    user = data.user_failure_data
    if user is not None:
        return str(_value(user.metadata or {}, conv.FAILURE_CLASS_KEY) or "permanent")
    # classified_failures() lets only transient errors escape unwrapped: retries ran out.
    return "transient"


class RunTotals:
    def __init__(self, instance: dg.DagsterInstance, overlap: timedelta = timedelta(minutes=5)):
        self.instance = instance
        self.overlap = overlap
        self.totals = Totals()
        self._seen: set[str] = set()
        self._since: datetime | None = None
        self._lock = threading.Lock()
        self.warm = False  # the whole history has been read once

    def warm_up(self) -> None:
        """Read the history now (about 10 ms a run on PostgreSQL here), so that the first
        scrape does not; until it is done, scrapes wait for it rather than report part."""
        threading.Thread(target=self.refresh, name="metrics-warm-up", daemon=True).start()

    def refresh(self) -> Totals:
        with self._lock:
            filters = dg.RunsFilter(
                statuses=TERMINAL,
                updated_after=None if self._since is None else self._since - self.overlap,
            )
            for record in self.instance.get_run_records(filters=filters):
                if self._since is None or record.update_timestamp > self._since:
                    self._since = record.update_timestamp
                if record.dagster_run.run_id in self._seen:
                    continue
                self._add(record)
                self._seen.add(record.dagster_run.run_id)
            self.warm = True
            return self.totals

    def _add(self, record) -> None:
        run: dg.DagsterRun = record.dagster_run
        queue = run.tags.get(tags.JOB_TYPE)
        if not queue:
            return
        t = self.totals
        status = run.status.value.lower()
        t.runs[(queue, status)] += 1
        if record.start_time and record.end_time:
            histogram = t.durations.setdefault(queue, DurationHistogram())
            histogram.observe(max(record.end_time - record.start_time, 0.0))

        events = self.instance.get_records_for_run(run.run_id, of_type=_STEP_EVENTS).records
        by_type: dict[dg.DagsterEventType, list] = {}
        for event in events:
            by_type.setdefault(event.event_log_entry.dagster_event.event_type, []).append(
                event.event_log_entry
            )
        failures = by_type.get(dg.DagsterEventType.STEP_FAILURE, [])
        if run.status == dg.DagsterRunStatus.FAILURE:
            t.failures[(queue, _failure_reason(failures))] += 1

        for entry in by_type.get(dg.DagsterEventType.STEP_OUTPUT, []):
            metadata = entry.dagster_event.step_output_data.metadata or {}
            self._add_output(queue, metadata, entry.timestamp)

        if run.status == dg.DagsterRunStatus.FAILURE and queue == conv.PAYMENT_QUEUE:
            t.payments[(_payload_currency(run), "failed")] += 1
        if run.status == dg.DagsterRunStatus.FAILURE and queue == conv.REFUND_QUEUE:
            t.refunds[("unknown", "failed")] += 1
        if queue == conv.MINT_QUEUE:
            t.mints[status] += 1
        if queue == conv.TRANSFER_QUEUE:
            t.transfers[status] += 1

        for entry in by_type.get(dg.DagsterEventType.STEP_OUTPUT, []):
            counts = self._message_counts(entry.step_key or "")
            metadata = entry.dagster_event.step_output_data.metadata or {}
            # Sent now: a delivery with its ledger key, not replayed from an earlier attempt
            # and not skipped (no address, no endpoint configured).
            if (
                counts is not None
                and _value(metadata, conv.SENT_KEY)
                and not _value(metadata, conv.REPLAYED_KEY)
            ):
                counts["sent"] += 1
        for entry in failures:
            counts = self._message_counts(entry.step_key or "")
            if counts is not None:
                counts["failed"] += 1

    def _message_counts(self, step_key: str):
        if step_key.startswith(conv.EMAIL_STEP_PREFIX):
            return self.totals.emails
        if step_key.startswith(conv.WEBHOOK_STEP_PREFIX):
            return self.totals.webhooks
        return None

    def _add_output(self, queue: str, metadata: dict[str, Any], timestamp: float) -> None:
        t = self.totals
        balance = _value(metadata, conv.WALLET_BALANCE_KEY)
        if balance is not None:
            wallet = str(_value(metadata, conv.WALLET_KEY) or "")
            if wallet not in t.wallet_balances or t.wallet_balances[wallet][0] <= timestamp:
                t.wallet_balances[wallet] = (timestamp, float(balance))
        if queue not in (conv.PAYMENT_QUEUE, conv.REFUND_QUEUE):
            return
        if any(_value(metadata, key) is None for key in conv.AMOUNT_KEYS):
            return
        if _value(metadata, conv.REPLAYED_KEY):
            return
        amount = int(_value(metadata, "amount"))
        currency = str(_value(metadata, "currency")).lower()
        status = str(_value(metadata, "status"))
        if queue == conv.PAYMENT_QUEUE:
            t.payments[(currency, status)] += 1
            if status == "succeeded":
                t.payment_amounts[currency] += amount
        else:
            t.refunds[(currency, status)] += 1
            if status in ("succeeded", "pending"):
                t.refund_amounts[currency] += amount
