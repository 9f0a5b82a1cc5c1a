"""The layers hold at run time, not only on paper: importing a provider client, a business rule
or the effect protocol loads no Dagster (import-linter does not see a package's `__init__`
pulled in by importing one of its modules; a fresh interpreter's `sys.modules` does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

DAGSTER_FREE = [
    "queue_pipelines.providers.stripe",
    "queue_pipelines.providers.smtp",
    "queue_pipelines.providers.webhooks",
    "queue_pipelines.telemetry.provider_calls",
    "queue_pipelines.effects",
    "queue_pipelines.payments",
    "queue_pipelines.notifications.notifier",
    "queue_pipelines.nft.minting",
    "queue_pipelines.nft.transfers",
    "queue_pipelines.intake.streams",
]


@pytest.mark.parametrize("module", DAGSTER_FREE)
def test_importing_loads_no_dagster(module):
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing {module} loads {loaded[:200]}"
