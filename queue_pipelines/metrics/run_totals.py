"""Totals over the finished runs in the Dagster instance, kept incrementally in storage.

A finished run never changes, so each is counted once. The runs to count are found through
their run-end events (RUN_SUCCESS, RUN_FAILURE, RUN_CANCELED), whose storage ids grow with
every write: the totals and a cursor over those ids are saved together, as one JSON value, in
the instance's own key-value store (the `kvs` table of the run storage, PostgreSQL in
production). A process that starts loads that value with one query and reads only the runs
that ended since, so its start-up does not grow with the run history; a run purged from
storage stays counted.

The cursor is a watermark plus the ids just above it that are already counted: an event is
only put under the watermark once it is older than `overlap`, because a writer that took an
id first may commit after one that took a later id. Every saved value is consistent on its
own (its totals are exactly the events under its cursor), so two gateway replicas writing in
turn can only move the stored cursor back, never count a run twice.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster._core.event_api import RunStatusChangeRecordsFilter

from queue_pipelines import tags
from queue_pipelines.intake.registry import SPECS, JobTypeSpec, RequestMetrics
from queue_pipelines.telemetry import conventions as conv
from queue_pipelines.telemetry.histogram import DurationHistogram
from queue_pipelines.telemetry.provider_calls import LATENCY_BUCKETS, tally_as_json, tally_from_json

log = logging.getLogger("queue_pipelines.metrics")

TERMINAL = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
RUN_END_EVENTS = {
    dg.DagsterEventType.RUN_SUCCESS: dg.DagsterRunStatus.SUCCESS,
    dg.DagsterEventType.RUN_FAILURE: dg.DagsterRunStatus.FAILURE,
    dg.DagsterEventType.RUN_CANCELED: dg.DagsterRunStatus.CANCELED,
}
_STEP_EVENTS = {dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE}
# The key in the instance's key-value store; bump the suffix if the stored shape changes.
STATE_KEY = "queue_pipelines/metrics/run_totals/v1"
# Run-end events read per query: also the most a scrape reads while a backlog is caught up.
PAGE_SIZE = 200
# Ids kept above the watermark at most; past it the oldest fold in early. Dagster reads at
# most 10,000 event records a query, and the query reads these again each time.
RECENT_CAP = 5000


_COUNTERS = ("runs", "items", "failures", "emails", "webhooks", "replays", "reconciliations")
# The stored value's other keys; any key besides these holds a job type's family (`counted`).
_NOT_COUNTED = ("durations", "wallet_balances", "waits", "launches", "provider_calls")
RESERVED_KEYS = frozenset(_COUNTERS + _NOT_COUNTED)


@dataclass
class Totals:
    runs: Counter = field(default_factory=Counter)  # (queue, status)
    # Requests settled by runs, (queue, "success" / "failure"); a run that records no outcomes
    # table (not an intake job) is one item of its own status.
    items: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # (queue, reason)
    durations: dict[str, DurationHistogram] = field(default_factory=dict)
    # The job types' own families (the registry's RequestMetrics), by totals key: e.g.
    # "payments" (currency, status), "payment_amounts" (currency), "mints" (status).
    counted: dict[str, Counter] = field(default_factory=dict)
    emails: Counter = field(default_factory=Counter)  # "sent" / "failed"
    webhooks: Counter = field(default_factory=Counter)
    # Effects a run returned from the ledger instead of doing them again, by kind: a job
    # type (its done column `earlier`), "email", "webhook" (`sent earlier`).
    replays: Counter = field(default_factory=Counter)
    # Stripe events reconciled by this run, (event_type, outcome).
    reconciliations: Counter = field(default_factory=Counter)
    wallet_balances: dict[str, tuple[float, float]] = field(default_factory=dict)  # (time, SOL)
    # "job_type/stage" -> seconds from enqueue to the run's start (started) or to settlement.
    waits: dict[str, DurationHistogram] = field(default_factory=dict)
    # queue -> seconds from a run's creation (the sensor's request) to its start.
    launches: dict[str, DurationHistogram] = field(default_factory=dict)
    # (provider, operation, outcome) -> latency of the calls run workers made.
    provider_calls: dict[tuple[str, str, str], DurationHistogram] = field(default_factory=dict)

    def family(self, totals_key: str) -> Counter:
        return self.counted.setdefault(totals_key, Counter())

    def as_json(self) -> dict:
        counters = {
            **{name: getattr(self, name) for name in _COUNTERS},
            **self.counted,
        }
        out: dict[str, Any] = {
            name: [[list(k) if isinstance(k, tuple) else k, v] for k, v in counter.items()]
            for name, counter in counters.items()
        }
        out["durations"] = {
            queue: {"buckets": list(h.buckets), "counts": h.counts, "total": h.total}
            for queue, h in self.durations.items()
        }
        out["wallet_balances"] = {w: list(v) for w, v in self.wallet_balances.items()}
        for name in ("waits", "launches"):
            out[name] = {
                key: {"buckets": list(h.buckets), "counts": h.counts, "total": h.total}
                for key, h in getattr(self, name).items()
            }
        out["provider_calls"] = tally_as_json(self.provider_calls)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Totals:
        totals = cls()
        for name, stored in data.items():
            if name in _NOT_COUNTED:
                continue
            counter = getattr(totals, name) if name in _COUNTERS else totals.family(name)
            for key, value in stored:
                counter[tuple(key) if isinstance(key, list) else key] = value
        for queue, h in data.get("durations", {}).items():
            if tuple(h["buckets"]) != conv.DURATION_BUCKETS:
                # Buckets changed in code: the stored counts cannot be re-binned.
                log.warning("stored duration buckets of %s differ from the code's: reset", queue)
                continue
            totals.durations[queue] = DurationHistogram(counts=list(h["counts"]), total=h["total"])
        for name, buckets in (("waits", conv.WAIT_BUCKETS), ("launches", conv.LAUNCH_BUCKETS)):
            for key, h in data.get(name, {}).items():
                if tuple(h["buckets"]) == buckets:
                    getattr(totals, name)[key] = DurationHistogram(
                        buckets=buckets, counts=list(h["counts"]), total=h["total"]
                    )
        if "provider_calls" in data:
            totals.provider_calls = tally_from_json(data["provider_calls"])
            if not totals.provider_calls and data["provider_calls"].get("calls"):
                log.warning("stored provider call buckets differ from the code's: reset")
        totals.wallet_balances = {
            w: (v[0], v[1]) for w, v in data.get("wallet_balances", {}).items()
        }
        return totals


def _value(metadata: dict[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _failure_reason(failures: list) -> str:
    if not failures:
        return "run_failure"  # the run died outside any step (launcher, worker lost)
    data = failures[-1].dagster_event.step_failure_data
    user = data.user_failure_data
    if user is not None:
        return str(_value(user.metadata or {}, conv.FAILURE_CLASS_KEY) or "permanent")
    # classified_failures() lets only transient errors escape unwrapped: retries ran out.
    return "transient"


@dataclass
class Cursor:
    """Every run-end event with a storage id up to `floor`, and those in `recent`, is counted.
    `recent` maps a storage id to its event's timestamp and run id."""

    floor: int = 0
    recent: dict[int, tuple[float, str]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"floor": self.floor, "recent": [[i, ts, r] for i, (ts, r) in self.recent.items()]}

    @classmethod
    def from_json(cls, data: dict) -> Cursor:
        return cls(data["floor"], {i: (ts, r) for i, ts, r in data["recent"]})

    def settle(self, cutoff: float, cap: int = RECENT_CAP) -> bool:
        """Move the floor up to the newest counted event older than `cutoff`, and further if
        more than `cap` ids would stay above it (a burst of runs ending within the overlap);
        True if it moved."""
        old = [i for i, (ts, _) in self.recent.items() if ts < cutoff]
        if len(self.recent) - len(old) > cap:
            old.append(sorted(self.recent)[len(self.recent) - cap - 1])
        if not old:
            return False
        self.floor = max(self.floor, *old)
        self.recent = {i: v for i, v in self.recent.items() if i > self.floor}
        return True


class RunTotals:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        overlap: timedelta = timedelta(minutes=5),
        page_size: int = PAGE_SIZE,
        recent_cap: int = RECENT_CAP,
        specs: Mapping[str, JobTypeSpec] = SPECS,
    ):
        self.instance = instance
        self.specs = specs  # the job types, whose RequestMetrics say how each is counted
        self.overlap = overlap
        self.page_size = page_size
        self.recent_cap = recent_cap
        self.totals = Totals()
        self.cursor = Cursor()
        self._lock = threading.Lock()
        self.warm = False  # the stored totals have been loaded: scrapes can be answered
        self.caught_up = False  # every run that ended before the last refresh is counted

    # -- start-up ------------------------------------------------------------------------
    def load(self) -> None:
        """Read the stored totals and cursor: one key-value query, whatever the history."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self.warm:
            return
        stored = self.instance.daemon_cursor_storage.get_cursor_values({STATE_KEY}).get(STATE_KEY)
        if stored:
            data = json.loads(stored)
            self.totals = Totals.from_json(data["totals"])
            self.cursor = Cursor.from_json(data["cursor"])
        self.warm = True

    def warm_up(self) -> None:
        """Load the stored totals, then count the runs that ended since they were saved, in
        the background and a page at a time (so a scrape meanwhile waits for one page at most,
        and a restart during a long catch-up resumes from the last page)."""
        threading.Thread(target=self._catch_up, name="metrics-warm-up", daemon=True).start()

    def _catch_up(self) -> None:
        try:
            self.load()
            while not self._refresh_pages(max_pages=1):
                pass
        except Exception:  # noqa: BLE001 - the next scrape retries; probes report the storage
            log.exception("could not catch up with the run history")

    # -- reading -------------------------------------------------------------------------
    def refresh(self, max_pages: int | None = None) -> Totals:
        """Count the runs that ended since the last refresh (at most `max_pages` pages of
        them) and return a copy of the totals."""
        self._refresh_pages(max_pages)
        with self._lock:
            return copy.deepcopy(self.totals)

    def _refresh_pages(self, max_pages: int | None) -> bool:
        """True when no run-end event is left to count."""
        with self._lock:
            self._load_locked()
            pages = 0
            while max_pages is None or pages < max_pages:
                pages += 1
                changed, more = self._count_page()
                if changed:
                    self._save()
                if not more:
                    self.caught_up = True
                    return True
            return False

    def _count_page(self) -> tuple[int, bool]:
        """Count one page of run-end events not counted yet; returns whether the totals or
        the cursor changed and whether more events may be waiting."""
        limit = len(self.cursor.recent) + self.page_size
        found = []
        for event_type in RUN_END_EVENTS:
            result = self.instance.fetch_run_status_changes(
                RunStatusChangeRecordsFilter(event_type, after_storage_id=self.cursor.floor),
                limit=limit,
                ascending=True,
            )
            found.extend(result.records)
        # The `limit` smallest ids over the three types are complete: each type's query
        # returned all of its own ids up to its `limit`-th one.
        found.sort(key=lambda r: r.storage_id)
        # A type that filled its `limit` may have more beyond it.
        more = len(found) >= limit
        page = [r for r in found[:limit] if r.storage_id not in self.cursor.recent]
        if page:
            run_ids = list({r.run_id for r in page})
            runs = {
                record.dagster_run.run_id: record
                for record in self.instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            }
            seen_runs = {run_id for _, run_id in self.cursor.recent.values()}
            for event in page:
                # A run has one end event; a second (e.g. canceled after failed) is ignored
                # while the first is in `recent`.
                record = runs.get(event.run_id)
                if record is not None and event.run_id not in seen_runs:
                    status = RUN_END_EVENTS[event.event_log_entry.dagster_event.event_type]
                    self._add(record, status, event.timestamp)
                seen_runs.add(event.run_id)
                self.cursor.recent[event.storage_id] = (event.timestamp, event.run_id)
        settled = self.cursor.settle(time.time() - self.overlap.total_seconds(), self.recent_cap)
        return bool(page) or settled, more

    def _save(self) -> None:
        value = json.dumps({"totals": self.totals.as_json(), "cursor": self.cursor.as_json()})
        try:
            self.instance.daemon_cursor_storage.set_cursor_values({STATE_KEY: value})
        except Exception:  # noqa: BLE001 - counted in memory; saved again on the next refresh
            log.exception("could not save the run totals")

    # -- counting ------------------------------------------------------------------------
    def _add(self, record, status: dg.DagsterRunStatus, ended_at: float) -> None:
        run: dg.DagsterRun = record.dagster_run
        queue = run.tags.get(tags.JOB_TYPE)
        if not queue:
            return
        t = self.totals
        status_name = status.value.lower()
        t.runs[(queue, status_name)] += 1
        if record.start_time:
            histogram = t.durations.setdefault(queue, DurationHistogram())
            end = record.end_time or ended_at
            histogram.observe(max(end - record.start_time, 0.0))
            created = record.create_timestamp.timestamp()
            launch = t.launches.setdefault(queue, DurationHistogram(conv.LAUNCH_BUCKETS))
            launch.observe(max(record.start_time - created, 0.0))

        events = self.instance.get_records_for_run(run.run_id, of_type=_STEP_EVENTS).records
        failures = []
        rows = 0
        for event in events:
            entry = event.event_log_entry
            dagster_event = entry.dagster_event
            if dagster_event.event_type == dg.DagsterEventType.STEP_OUTPUT:
                metadata = dagster_event.step_output_data.metadata or {}
                self._add_balance(metadata, entry.timestamp)
            else:
                failures.append(entry)
                user = dagster_event.step_failure_data.user_failure_data
                metadata = (user.metadata if user is not None else None) or {}
            for row in _outcome_rows(metadata):
                rows += 1
                self._add_request(queue, row, run)
            self._add_provider_calls(metadata)
        if not rows and queue not in self.specs:
            # Not an intake job (wallet_balance_job): the run is the one thing it does.
            t.items[(queue, status_name)] += 1
        if status == dg.DagsterRunStatus.FAILURE:
            t.failures[(queue, _failure_reason(failures))] += 1

    def _add_balance(self, metadata: dict[str, Any], timestamp: float) -> None:
        balance = _value(metadata, conv.WALLET_BALANCE_KEY)
        if balance is not None:
            wallet = str(_value(metadata, conv.WALLET_KEY) or "")
            balances = self.totals.wallet_balances
            if wallet not in balances or balances[wallet][0] <= timestamp:
                balances[wallet] = (timestamp, float(balance))

    def _add_provider_calls(self, metadata: dict[str, Any]) -> None:
        calls = _value(metadata, conv.PROVIDER_CALLS_KEY)
        if calls is None:
            return
        series = tally_from_json(calls)
        if not series and isinstance(calls, dict) and calls.get("calls"):
            log.warning("a run's provider call buckets differ from the code's: not counted")
        for key, h in series.items():
            self.totals.provider_calls.setdefault(key, DurationHistogram(LATENCY_BUCKETS)).merge(h)

    def _add_request(self, queue: str, row: dict[str, Any], run: dg.DagsterRun) -> None:
        """One request of a batch run, from its row in the run's outcomes table: counted
        when it was done now (not an earlier effect returned again) or failed for good."""
        if row.get(conv.SETTLED_KEY) == conv.SETTLED_EARLIER:
            return  # a re-execution left it alone: the run that settled it counted it
        t = self.totals
        status = row.get("status")
        for stage, column in (("started", "waited_seconds"), ("settled", "settled_after_seconds")):
            if row.get(column) is not None:
                histogram = t.waits.setdefault(
                    f"{queue}/{stage}",
                    DurationHistogram(
                        buckets=conv.WAIT_BUCKETS, counts=[0] * (len(conv.WAIT_BUCKETS) + 1)
                    ),
                )
                histogram.observe(float(row[column]))
        if status in _ITEM_STATUS:  # unfinished: counted when a later run settles it
            t.items[(queue, _ITEM_STATUS[status])] += 1
        spec = self.specs.get(queue)
        if spec is not None and spec.metrics is not None:
            _count_request(t, spec.metrics, row, run)
            if status == "succeeded" and row.get(spec.metrics.done_column) == "earlier":
                t.replays[queue] += 1
        if row.get(conv.RECONCILED_KEY) == "now":
            t.reconciliations[(str(row.get("event_type")), str(row.get("outcome")))] += 1
        if spec is not None and spec.request_is_email and status == "failed":
            t.emails["failed"] += 1
        for notice, counter in (("email", t.emails), ("webhook", t.webhooks)):
            if row.get(notice) == "sent":
                counter["sent"] += 1
            elif row.get(notice) == "sent earlier":
                t.replays[notice] += 1
        failed_notices = str(row.get(conv.NOTIFICATION_FAILED_KEY) or "")
        if "e-mail" in failed_notices:
            t.emails["failed"] += 1
        if "webhook" in failed_notices:
            t.webhooks["failed"] += 1


# A request's row status -> its status in queue_jobs_processed_total, the words a run's status
# has there (success, failure). A declined card is a failed request.
_ITEM_STATUS = {"succeeded": "success", "failed": "failure"}


def _count_request(
    t: Totals, metrics: RequestMetrics, row: dict[str, Any], run: dg.DagsterRun
) -> None:
    """One request's row in its type's families, as its RequestMetrics say (docs/metrics.md)."""
    status = row.get("status")
    done_now = status == "succeeded" and row.get(metrics.done_column) == "now"
    requests = t.family(metrics.requests.totals_key)
    if metrics.status_column is None:
        # With a label field, (its value, status): e.g. ("delete", "success").
        label = () if metrics.label_field is None else (_label_of(run, row, metrics.label_field),)
        if done_now:
            requests[(*label, "success") if label else "success"] += 1
        elif status == "failed":
            requests[(*label, "failure") if label else "failure"] += 1
        return
    if done_now:
        currency, state = str(row.get("currency")).lower(), str(row.get(metrics.status_column))
        requests[(currency, state)] += 1
        if metrics.amounts is not None and state in metrics.amount_statuses:
            t.family(metrics.amounts.totals_key)[currency] += int(row.get("amount") or 0)
    elif status == "failed":
        currency = (
            _request_currency(run, row) if metrics.failed_currency_from_request else "unknown"
        )
        requests[(currency, "failed")] += 1


def _outcome_rows(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    table = _value(metadata, conv.OUTCOMES_KEY)
    return [dict(record.data) for record in getattr(table, "records", None) or []]


def _request_currency(run: dg.DagsterRun, row: dict[str, Any]) -> str:
    """A failed payment's currency, from its request in the run's config."""
    return _payload_value(run, row, "currency").lower()


def _label_of(run: dg.DagsterRun, row: dict[str, Any], field: str) -> str:
    """The row's `field`, or (a failed request's row has only the failure) its payload's."""
    value = row.get(field)
    return str(value) if value else _payload_value(run, row, field)


def _payload_value(run: dg.DagsterRun, row: dict[str, Any], field: str) -> str:
    """`field` of the row's request payload, from the run's config; "unknown" if absent."""
    for op in (run.run_config or {}).get("ops", {}).values():
        for request in (op.get("config") or {}).get("requests", []):
            if request.get("idempotency_key") == row.get("request"):
                return str(request.get("payload", {}).get(field) or "unknown")
    return "unknown"
