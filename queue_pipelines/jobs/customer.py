"""customer_job: create, update and delete a batch of one tenant's Stripe customers, each at
most once and only the tenant's own (queue_pipelines/customers.py). Requests on one customer
or one e-mail (a create's, or the one an update sets) take turns in the batch's order: an
update then a delete of the same customer happen in that order."""

import dagster as dg

from queue_pipelines.customers import manage_customer_once, turns_of
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.jobs.batch import BatchConfig, Request, batch_job, run_batch
from queue_pipelines.jobs.common import run_is_live
from resources import EffectLedgerResource, RedisResource, StripeResource


@dg.op(tags={"queue/effect": "stripe.customer"})
def manage_customers(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    redis: RedisResource,
    stripe: StripeResource,
    effect_ledger: EffectLedgerResource,
) -> dg.Output[dict[str, int]]:
    api, ledger = stripe.api(), effect_ledger.ledger()
    is_live = run_is_live(context.instance)

    def manage(request: Request[CustomerPayload]) -> dict:
        outcome = manage_customer_once(
            api,
            ledger,
            tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key,
            request=request.payload,
            run_id=context.run_id,
            run_is_live=is_live,
        )
        # No e-mail addresses in the outcomes: every operator reads them in the UI.
        return {
            "action": outcome.action,
            "customer": outcome.customer_id,
            "changed": "earlier" if outcome.replayed else "now",
        }

    return run_batch(
        context,
        config,
        intake=redis.intake(),
        handle=manage,
        turns_of=lambda request: turns_of(request.payload),
    )


customer_job = batch_job(
    "customer",
    manage_customers,
    description="Create, update (name, e-mail, metadata) or delete a batch of one tenant's "
    "Stripe customers, each at most once and only the tenant's own (metadata tenant_id).",
)
