"""Run tags that tie a Dagster run to the intake requests it serves."""

JOB_TYPE = "queue/job_type"
TENANT = "queue/tenant"
# Only on a run that carries one request (batch size 1): which request.
REQUEST_KEY = "queue/request_key"
SANDBOX = "queue/sandbox"
PRIORITY = "dagster/priority"
# Set by Dagster on a failed run that its run-retry daemon will launch again.
WILL_RETRY = "dagster/will_retry"
AUTO_RETRY_RUN_ID = "dagster/auto_retry_run_id"  # set on a failed run once its retry exists
# Set on a run in which a notification failed for good while the effect before it stands:
# how many requests had that (docs/notifications.md). Their entries are acked all the same.
NOTIFICATION_FAILED = "queue/notification_failed"
# A micro-batch run: its key (also its run key). How many requests it carries is in its run
# config and its step's metadata, not a tag: tags are what an operator filters the Runs list
# on. A run some of whose requests failed for good is a failed run (docs/operations.md).
BATCH = "queue/batch"
