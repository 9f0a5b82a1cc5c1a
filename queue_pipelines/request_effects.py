"""What a request did at its provider, as the effect ledger recorded it: a payment's
PaymentIntent, a refund, a minted ticket, a transfer, a customer changed. The intake knows only how a request ended
(its outcome in Redis: status, reason, run); `request show` and `enqueue --wait` add this, so
that the ids an operator needs next (a PaymentIntent to refund) are where they look.

Read-only, and outside the intake package: the intake and the ledger are independent layers
(pyproject.toml's import contracts); the CLI joins them here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy.exc

from queue_pipelines.ledger import EffectLedger, effect_key

# Job types whose one effect the ledger records under `<kind>:<tenant>:<idempotency key>`
# (payments.py, nft/minting.py, nft/transfers.py, customers.py), and that kind: the request
# key's type, but for customer, whose own kind is taken by the rows noting a buyer's customer.
EFFECT_KINDS = {
    "payment": "payment",
    "refund": "refund",
    "mint": "mint",
    "transfer": "transfer",
    "customer": "customer-change",
}


class RecordedEffects:
    """`effects(request_key)`: the ledger's result for the request's effect, or None (not
    done, or a job type without one); RuntimeError when the ledger cannot be read. The
    ledger is opened on first use; an embedded SQLite ledger that does not exist yet is not
    created by looking."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._ledger: EffectLedger | None = None

    def __call__(self, request_key: str) -> dict[str, Any] | None:
        job_type, tenant_id, idempotency_key = request_key.split(":", 2)
        kind = EFFECT_KINDS.get(job_type)
        if kind is None:
            return None
        try:
            ledger = self._open()
            if ledger is None:
                return None
            return ledger.result_of(effect_key(kind, tenant_id, idempotency_key))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            why = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()[0]
            raise RuntimeError(f"the effect ledger cannot be read: {why}") from exc

    def _open(self) -> EffectLedger | None:
        if self._ledger is None:
            path = self.database_url.removeprefix("sqlite:///")
            if path != self.database_url and not Path(path).exists():
                return None
            self._ledger = EffectLedger(self.database_url)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.dispose()
