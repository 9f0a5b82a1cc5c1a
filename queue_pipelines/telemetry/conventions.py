"""Which runs and requests each metric counts (docs/metrics.md). A job built later joins a
metric by following the convention, with no change here; a job type's own families (which
column says done, which counters) are its entry in queue_pipelines/intake/registry.py.

- A run's queue is its `queue/job_type` tag (every job sets it as a job tag, so runs launched
  by hand carry it too); runs without it are not counted. Runs, their durations and their
  failures are counted per run.
- Requests are counted from the `outcomes` table a batch run's op records (its step output,
  or its step failure when some requests did not finish): one row per request, with its
  `status` (succeeded, failed, unfinished). A row counts when the effect was done by this run
  (its type's done column, e.g. `charged`, is `now`, not `earlier`) or when it failed for good.
- queue_jobs_processed_total counts those rows by `status`: succeeded -> success, failed ->
  failure (a declined card is a failed request whatever its run's status); a run of a job
  that is not an intake job, with no rows, counts as one item of its run status.
- A row whose done column is `earlier`, or whose `email` / `webhook` is `sent earlier`, is a
  ledger replay (ledger_replays_total); a `stripe_event` row with `reconciled` `now` counts
  in stripe_reconciliations_total by its `event_type` and `outcome`.
- Each job type's own families, as its registry entry's RequestMetrics say: e.g. payments,
  `payment` rows with `amount`, `currency` and `payment_status`, a failed row counting as
  status `failed` in its request's currency; NFT mints, `mint` rows, `success` or `failure`.
- E-mails and webhooks: a row's `email` / `webhook` is `sent` when sent by this run;
  `notification_failed` names the notice (`e-mail ...`, `webhook ...`) that failed for good.
  A failed row of a type whose request is an e-mail (`notification`) is a failed e-mail.
- A row whose `settled` is `earlier` is a request a re-execution found settled by an earlier
  run of its batch and left alone: it counts in no request family (its run still counts).
- Waiting: a row's `waited_seconds` (enqueue to the start of the run that settled it) and
  `settled_after_seconds` (enqueue to its settlement), as queue_request_wait_seconds with
  `stage` started / settled.
- Provider calls of run workers: the JSON metadata `provider_calls` of a batch run's op
  (step output or step failure), written by jobs/batch.py from the run's ProviderCallTally
  (telemetry/provider_calls.py): latency bucket counts and sum per provider, operation and outcome
  (`ok`, `transient`, `permanent`, `unexpected`).
- Wallet balance: the newest step output metadata `wallet_balance_sol` (a float), labelled
  by the output's `wallet` metadata.
"""

from __future__ import annotations

OUTCOMES_KEY = "outcomes"
PROVIDER_CALLS_KEY = "provider_calls"
NOTIFICATION_FAILED_KEY = "notification_failed"
# A batch row's column: `earlier` when an earlier run of the batch settled the request (a
# re-execution found its outcome recorded); the row is not counted again.
SETTLED_KEY = "settled"
SETTLED_EARLIER = "earlier"
# A stripe_event row's column: `now` when this run reconciled the event (`earlier`: replayed).
RECONCILED_KEY = "reconciled"
WALLET_BALANCE_KEY = "wallet_balance_sol"
WALLET_KEY = "wallet"
# Written by classified_failures() into dg.Failure metadata.
FAILURE_CLASS_KEY = "failure_class"

# Seconds a request waits, enqueue to its run's start and to settlement: from a fraction of
# a second on an idle queue to hours behind a provider outage.
WAIT_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0)
# Seconds from a run's creation to its start: half a second from a warm launcher to minutes
# in a full run queue or behind a pod that cannot be scheduled.
LAUNCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Seconds: runs here take from under a second (a charge) to minutes (a congested mint).
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
