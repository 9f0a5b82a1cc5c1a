"""Valid intake envelopes for tests that need no server."""

from __future__ import annotations

from queue_pipelines.intake.payloads import NotificationPayload, PaymentPayload
from queue_pipelines.intake.schema import Envelope


def payment(tenant: str, key: str, *, priority: int = 0, amount: int = 2500) -> Envelope:
    return Envelope(
        type="payment",
        tenant_id=tenant,
        idempotency_key=key,
        priority=priority,
        payload=PaymentPayload(
            order_id=f"order-{key}",
            amount=amount,
            currency="usd",
            customer_email="buyer@example.com",
            payment_method="pm_card_visa",
        ),
    )


def notification(tenant: str, key: str) -> Envelope:
    return Envelope(
        type="notification",
        tenant_id=tenant,
        idempotency_key=key,
        payload=NotificationPayload(template="operator_alert", recipient="ops@example.com"),
    )


def payment_wire(tenant: str = "t1", key: str = "k1", **changes) -> dict:
    """A payment envelope as the JSON object a producer writes, with `changes` applied (a
    value of None removes the field)."""
    data = payment(tenant, key).model_dump(mode="json", exclude_none=True)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data
