"""Delete finished Dagster runs (and their event logs) older than the retention period.

Dagster's own `retention` settings purge sensor and schedule ticks only; runs stay forever
unless deleted. Run by the CronJob in deploy/k8s/purge-runs.yaml (from the project image,
with the instance of deploy/dagster.yaml), or by hand:

    DAGSTER_HOME=... python deploy/k8s/purge_runs.py --older-than-days 90 [--dry-run]

The gateway's metrics keep counting purged runs (their totals are stored, docs/metrics.md),
and the effect ledger, which records every charge, refund and mint, is not touched.
Runs still queued, starting or running are never deleted, whatever their age.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
DEFAULT_DAYS = 90


def purge_finished_runs(
    instance: dg.DagsterInstance,
    older_than: timedelta,
    dry_run: bool = False,
    batch: int = 200,
    now: datetime | None = None,
) -> int:
    """Delete finished runs last updated before now - older_than; returns how many."""
    cutoff = (now or datetime.now(UTC)) - older_than
    deleted = 0
    cursor = None
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, updated_before=cutoff),
            limit=batch,
            cursor=cursor if dry_run else None,
        )
        if not records:
            return deleted
        for record in records:
            if not dry_run:
                instance.delete_run(record.dagster_run.run_id)
            deleted += 1
        cursor = records[-1].dagster_run.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--older-than-days",
        type=int,
        default=int(os.environ.get("RUN_RETENTION_DAYS") or DEFAULT_DAYS),
        help=f"retention in days (default: RUN_RETENTION_DAYS, else {DEFAULT_DAYS})",
    )
    parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    args = parser.parse_args()
    if args.older_than_days < 1:
        parser.error("--older-than-days must be at least 1")
    with dg.DagsterInstance.get() as instance:
        count = purge_finished_runs(instance, timedelta(days=args.older_than_days), args.dry_run)
    print(
        json.dumps(
            {"older_than_days": args.older_than_days, "dry_run": args.dry_run, "runs": count}
        )
    )


if __name__ == "__main__":
    main()
