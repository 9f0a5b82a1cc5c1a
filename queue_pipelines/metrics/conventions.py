"""Which runs and steps each metric counts (docs/metrics.md). A job built later joins a metric
by following the convention, with no change here.

- A run's queue is its `queue/job_type` tag (every intake job sets it as a job tag, so runs
  launched by hand carry it too); runs without it are not counted.
- Payments: the step outputs of `payment` runs whose metadata has `amount`, `currency` and
  `status` (charge_payment records them); `replayed: true` outputs are an earlier charge
  returned again and are not counted twice. A failed `payment` run counts once as status
  `failed`, with the currency of its run config's payload.
- Refunds: the same for `refund` runs.
- NFT mints and transfers: runs of the `mint` and `nft_transfer` queues (the job tags of
  mint_job and nft_transfer_job), by run outcome.
- E-mails and webhooks: steps whose key starts with `email_` / `webhook_` (the notification
  steps of queue_pipelines/jobs/notification.py). A message sent is such a step's output whose
  metadata has an `effect_key` (its ledger key) and not `replayed: true`; a skipped message
  (no address, no endpoint) has none. A step failure (after its retries) is one that failed.
- Wallet balance: the newest step output metadata `wallet_balance_sol` (a float), labelled
  by the output's `wallet` metadata.
"""

from __future__ import annotations

PAYMENT_QUEUE = "payment"
REFUND_QUEUE = "refund"
MINT_QUEUE = "mint"
TRANSFER_QUEUE = "nft_transfer"
EMAIL_STEP_PREFIX = "email_"
WEBHOOK_STEP_PREFIX = "webhook_"
WALLET_BALANCE_KEY = "wallet_balance_sol"
WALLET_KEY = "wallet"
AMOUNT_KEYS = ("amount", "currency", "status")
REPLAYED_KEY = "replayed"
SENT_KEY = "effect_key"
# Written by classified_failures() into dg.Failure metadata.
FAILURE_CLASS_KEY = "failure_class"

# Seconds: runs here take from under a second (a charge) to minutes (a congested mint).
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
