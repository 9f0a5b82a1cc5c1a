"""One list of environment variables: the docs' table is generated from it, the code reads
nothing that is not on it, and production mode refuses secrets left at sandbox values."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from queue_pipelines.env_vars import (
    DOC,
    VARIABLES,
    SandboxSecretError,
    documented_names,
    refuse_sandbox_secrets,
    with_table,
)
from queue_pipelines.sandbox import defaults as settings
from tests.test_gateway_service import gateway_command

ROOT = Path(__file__).resolve().parent.parent
READS = re.compile(
    r"""(?:environ\.get|environ\[|env\.get|EnvVar|_env_or_none|_number\(env,)\s*\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
)
NAMES = {v.name for v in VARIABLES}


def test_the_docs_table_is_the_generated_one():
    document = DOC.read_text()
    assert with_table(document) == document, "run: python -m queue_pipelines.env_vars --write"
    assert documented_names(document) == [v.name for v in VARIABLES]


def test_the_docs_name_the_secret_the_code_reads():
    text = DOC.read_text() + (ROOT / "deploy/k8s/secrets.example.yaml").read_text()
    assert "WEBHOOK_SIGNING_SECRET" not in text
    assert "WEBHOOK_SECRET:" in (ROOT / "deploy/k8s/secrets.example.yaml").read_text()


def test_every_variable_the_code_reads_is_on_the_list():
    read, source = set(), ""
    for folder in ("queue_pipelines", "resources", "sensors"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "env_vars.py":
                source += path.read_text()
    read = set(READS.findall(source))
    # Dagster's own settings, set by the code location for itself.
    read -= {"DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT", "DAGSTER_RUN_STATUS_SENSOR_FETCH_LIMIT"}
    assert read - NAMES == set()
    # And the list holds nothing the code never reads (the webhook URLs are built by kind,
    # the per-type settings by job type: f"QP_BATCH_SIZE_{...}").
    unread = {
        n
        for n in NAMES
        if f'"{n}"' not in source
        and not n.startswith("WEBHOOK_URL_")
        and not (n.endswith("<TYPE>") and n.replace("<TYPE>", "{") in source)
    }
    assert unread == set()


PRODUCTION = {"STRIPE_SECRET_KEY": "sk_live_" + "x" * 24}


@pytest.mark.parametrize(
    "webhook_secret", [None, settings.SANDBOX_WEBHOOK_SECRET], ids=["unset", "sandbox value"]
)
def test_production_mode_refuses_the_sandbox_webhook_secret(webhook_secret):
    env = dict(PRODUCTION)
    if webhook_secret:
        env["WEBHOOK_SECRET"] = webhook_secret
    with pytest.raises(SandboxSecretError, match="WEBHOOK_SECRET"):
        refuse_sandbox_secrets(env)
    refuse_sandbox_secrets({**env, "WEBHOOK_SECRET": "whsec_b3duIHNlY3JldCBvZiBvdXJz"})
    refuse_sandbox_secrets({})  # sandbox mode: the sandbox secret is what it is for
    refuse_sandbox_secrets({"STRIPE_SECRET_KEY": settings.SANDBOX_STRIPE_KEY})


def test_the_code_location_refuses_to_load_in_production_with_sandbox_secrets(monkeypatch):
    from queue_pipelines import definitions

    monkeypatch.setenv("STRIPE_SECRET_KEY", PRODUCTION["STRIPE_SECRET_KEY"])
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    with pytest.raises(SandboxSecretError, match="WEBHOOK_SECRET"):
        definitions.build_definitions()


def test_the_gateway_refuses_to_start_in_production_with_sandbox_secrets():
    env = {k: v for k, v in os.environ.items() if k not in ("WEBHOOK_SECRET",)}
    env.update(PRODUCTION, GATEWAY_JWT_SECRET="g" * 40)
    result = gateway_command(env)
    assert result.returncode == 2
    assert "WEBHOOK_SECRET" in result.stderr and "sandbox" in result.stderr
