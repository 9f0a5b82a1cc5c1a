"""Run tags that tie a Dagster run to the intake request it serves."""

JOB_TYPE = "queue/job_type"
TENANT = "queue/tenant"
IDEMPOTENCY_KEY = "queue/idempotency_key"
REQUEST_KEY = "queue/request_key"
ENTRY_ID = "queue/entry_id"
SANDBOX = "queue/sandbox"
PRIORITY = "dagster/priority"
PAYMENT_INTENT = "queue/payment_intent"
# Set by Dagster on a failed run that its run-retry daemon will launch again.
WILL_RETRY = "dagster/will_retry"
# Set on a run whose effect (charge, refund, mint) stands but whose notification failed for
# good: the intake settles its entries instead of dead-lettering them (docs/notifications.md).
NOTIFICATION_FAILED = "queue/notification_failed"
