"""A run worker of one effect, as a process of its own, for the tests that kill it at an exact
moment (tests/effects/test_faults.py, tests/customers/test_faults.py): it charges, refunds or
changes a customer once through the given Stripe address and effect ledger, then prints the
outcome as JSON.

    python -m tests.support.effect_worker '{"kind": "payment", "stripe": ..., ...}'
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from queue_pipelines.customers import manage_customer_once
from queue_pipelines.intake.payloads import CustomerPayload, PaymentPayload, RefundPayload
from queue_pipelines.ledger import EffectLedger
from queue_pipelines.payments import charge_once, refund_once
from queue_pipelines.providers.stripe import StripeApi


def main(spec: dict) -> None:
    stripe = StripeApi(spec["secret_key"], api_base=spec["stripe"])
    ledger = EffectLedger(spec["ledger"])
    common = {
        "tenant_id": spec["tenant"],
        "idempotency_key": spec["key"],
        "run_id": spec["run_id"],
        "run_is_live": lambda _run_id: False,
    }
    if spec["kind"] == "payment":
        outcome = charge_once(
            stripe, ledger, payment=PaymentPayload.model_validate(spec["payload"]), **common
        )
    elif spec["kind"] == "customer":
        outcome = manage_customer_once(
            stripe, ledger, request=CustomerPayload.model_validate(spec["payload"]), **common
        )
    else:
        outcome = refund_once(
            stripe, ledger, refund=RefundPayload.model_validate(spec["payload"]), **common
        )
    print(json.dumps(asdict(outcome)), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
