"""Read-back helpers: what localstripe holds, counted per tenant."""

from __future__ import annotations

from resources import StripeResource


def payment_intents_of(stripe: StripeResource, tenant_id: str) -> list:
    listing = stripe.api().client().v1.payment_intents.list(params={"limit": 100})
    return [
        intent
        for intent in listing.auto_paging_iter()
        if intent.metadata is not None and intent.metadata.to_dict().get("tenant_id") == tenant_id
    ]
