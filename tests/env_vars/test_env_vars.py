"""One configuration model (queue_pipelines/settings.py): the docs' table is generated from it,
the code reads no setting around it, and production mode refuses secrets left at sandbox
values."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from queue_pipelines.env_vars import DOC, VARIABLES, documented_names, with_table
from queue_pipelines.settings import (
    SANDBOX_STRIPE_KEY,
    SANDBOX_WEBHOOK_SECRET,
    SandboxSecretError,
    Settings,
    load,
)
from tests.gateway.test_service import gateway_command

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = ROOT / "queue_pipelines" / "settings.py"
# A read of the environment: os.environ.get / os.environ[...] / os.getenv.
ENVIRON_READ = re.compile(r"environ\.get\(|environ\[|getenv\(")
ENVVAR = re.compile(r"""(?:EnvVar|_env_or_none)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
NAMES = {v.name for v in VARIABLES}


def project_sources() -> dict[Path, str]:
    return {
        path: path.read_text()
        for folder in ("queue_pipelines", "resources", "sensors")
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def test_the_docs_table_is_the_generated_one():
    document = DOC.read_text()
    assert with_table(document) == document, "run: python -m queue_pipelines.env_vars --write"
    assert documented_names(document) == [v.name for v in VARIABLES]


def test_the_docs_name_the_secret_the_code_reads():
    text = DOC.read_text() + (ROOT / "deploy/k8s/secrets.example.yaml").read_text()
    assert "WEBHOOK_SIGNING_SECRET" not in text
    assert "WEBHOOK_SECRET:" in (ROOT / "deploy/k8s/secrets.example.yaml").read_text()


def test_only_the_settings_module_reads_the_environment():
    """Building a child process's environment (`**os.environ`) and handing Dagster its home
    (`os.environ.setdefault`) are not reads of a setting."""
    readers = [
        str(path.relative_to(ROOT))
        for path, text in project_sources().items()
        if path != SETTINGS_MODULE and ENVIRON_READ.search(text)
    ]
    assert readers == []


def test_every_secret_handed_to_a_resource_is_a_setting():
    handed = set()
    for text in project_sources().values():
        handed |= set(ENVVAR.findall(text))
    assert {"STRIPE_SECRET_KEY", "REDIS_URL", "WEBHOOK_SECRET"} <= handed
    assert handed - NAMES == set()


def test_every_setting_is_used():
    """A field no module reads (as an attribute, or by its name or its variable's name in
    quotes) would be a documented variable that does nothing. Some are reached by a name built
    at run time: the provider limits (<provider>_<field>), the webhook
    URLs (by kind), the tenant limits (by list)."""
    from queue_pipelines.deployment import LIMIT_FIELDS
    from queue_pipelines.intake.registry import WEBHOOK_KINDS

    built = {f"{p}_{f}" for p in ("stripe", "smtp") for f in LIMIT_FIELDS}
    built |= {f"webhook_url_{kind}" for kind in WEBHOOK_KINDS}
    source = "".join(project_sources().values())
    unused = [
        name
        for name in Settings.model_fields
        if name not in built and not re.search(rf"\.{name}\b|(?i:[\"']{name}[\"'])", source)
    ]
    assert unused == []


PRODUCTION = {"STRIPE_SECRET_KEY": "sk_live_" + "x" * 24}


@pytest.mark.parametrize(
    "webhook_secret", [None, SANDBOX_WEBHOOK_SECRET], ids=["unset", "sandbox value"]
)
def test_production_mode_refuses_the_sandbox_webhook_secret(webhook_secret):
    env = dict(PRODUCTION)
    if webhook_secret:
        env["WEBHOOK_SECRET"] = webhook_secret
    with pytest.raises(SandboxSecretError, match="WEBHOOK_SECRET"):
        load(env).refuse_sandbox_secrets()
    load({**env, "WEBHOOK_SECRET": "whsec_b3duIHNlY3JldCBvZiBvdXJz"}).refuse_sandbox_secrets()
    load({}).refuse_sandbox_secrets()  # sandbox mode: the sandbox secret is what it is for
    load({"STRIPE_SECRET_KEY": SANDBOX_STRIPE_KEY}).refuse_sandbox_secrets()


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
