"""The effect ledger's storage, shared by every run worker."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from queue_pipelines.ledger import EffectLedger


class EffectLedgerResource(dg.ConfigurableResource):
    """PostgreSQL (DAGSTER_POSTGRES_URL) in production; SQLite under DAGSTER_HOME locally."""

    database_url: str = Field(description="SQLAlchemy URL: postgresql://... or sqlite:///path")

    _ledger: EffectLedger | None = PrivateAttr(default=None)

    def ledger(self) -> EffectLedger:
        if self._ledger is None:
            self._ledger = EffectLedger(self.database_url)
        return self._ledger

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._ledger is not None:
            self._ledger.dispose()
