"""Start-up refuses placeholder and weak secrets (issue #17, point 9): deploy/k8s/
secrets.example.yaml applied verbatim stops the gateway, naming each variable and showing no
value; every example value in deploy/ is caught; an HS256 key under 32 bytes and a metrics
token under 16 are refused; the secret `make run` generates passes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from queue_pipelines.env_vars import VARIABLES
from queue_pipelines.gateway.config import (
    GatewayConfigError,
    refuse_unsafe_secrets,
    settings_from_env,
)
from queue_pipelines.settings import SandboxSecretError, load
from tests.gateway.test_service import gateway_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/k8s/secrets.example.yaml"
SECRET_NAMES = {v.name for v in VARIABLES if v.secret}
STRONG_JWT = "s" * 48
# An example line, commented out or not: `  NAME: "value"`.
EXAMPLE_LINE = re.compile(r'^\s*#?\s*([A-Z][A-Z0-9_]+): "([^"]*)"\s*$', re.MULTILINE)


def example_env() -> dict[str, str]:
    """The Secret the gateway reads (queue-pipelines-env), its values verbatim."""
    [secret] = [
        d
        for d in yaml.safe_load_all(EXAMPLE.read_text())
        if d and d["metadata"]["name"] == "queue-pipelines-env"
    ]
    return dict(secret["stringData"])


def every_example_value() -> dict[str, str]:
    """Every `NAME: "value"` in deploy/, the commented-out examples included."""
    found = {}
    for path in sorted((ROOT / "deploy").rglob("*.yaml")):
        for name, value in EXAMPLE_LINE.findall(path.read_text()):
            if name in SECRET_NAMES:
                found[f"{path.relative_to(ROOT)}:{name}"] = (name, value)
    return found


def clean_env() -> dict[str, str]:
    """This process's environment without any setting the example holds or the gateway reads."""
    drop = SECRET_NAMES | {"GATEWAY_JWT_ALGORITHM"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_the_example_secrets_applied_verbatim_stop_the_gateway():
    example = example_env()
    assert {"GATEWAY_JWT_SECRET", "GATEWAY_METRICS_TOKEN", "REDIS_URL"} <= set(example)
    result = gateway_command({**clean_env(), **example})
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    for name in example:
        assert name in result.stderr, (name, result.stderr)
    # Names, never values: not even the placeholder mark.
    for value in example.values():
        assert value not in result.stderr
    assert "CHANGE-ME" not in result.stderr
    assert "example.internal" not in result.stderr


def test_every_example_secret_value_in_deploy_is_refused():
    examples = every_example_value()
    # The three that must be set, and the webhook URLs, which hold no CHANGE-ME.
    assert {"REDIS_URL", "GATEWAY_JWT_SECRET", "WEBHOOK_URL_PAYMENT"} <= {
        name for name, _ in examples.values()
    }
    for where, (name, value) in examples.items():
        assert load({name: value}).placeholder_secrets() == [name], where
        with pytest.raises(GatewayConfigError, match=name):
            refuse_unsafe_secrets({"GATEWAY_JWT_SECRET": STRONG_JWT, name: value})


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"GATEWAY_JWT_SECRET": "x" * 31}, ["GATEWAY_JWT_SECRET"]),
        (
            {"GATEWAY_JWT_SECRET": STRONG_JWT, "GATEWAY_METRICS_TOKEN": "t" * 15},
            ["GATEWAY_METRICS_TOKEN"],
        ),
        ({"GATEWAY_JWT_SECRET": "my-change-me-secret-of-40-bytes-x-x-x-x"}, ["GATEWAY_JWT_SECRET"]),
        (
            {
                "GATEWAY_JWT_SECRET": "k9Qz-short-key",
                "GATEWAY_METRICS_TOKEN": "m7Wq-tiny",
                "STRIPE_WEBHOOK_SECRET": "whsec_CHANGE-ME",
            },
            ["GATEWAY_JWT_SECRET", "GATEWAY_METRICS_TOKEN", "STRIPE_WEBHOOK_SECRET"],
        ),
    ],
    ids=["short-jwt", "short-metrics-token", "placeholder-any-case", "all-named-at-once"],
)
def test_weak_and_placeholder_secrets_are_refused_each_by_name(settings, named):
    with pytest.raises(GatewayConfigError) as refused:
        settings_from_env(settings)
    message = str(refused.value)
    for name in named:
        assert name in message
    for value in settings.values():
        assert value not in message


def test_strong_secrets_start():
    settings = settings_from_env(
        {"GATEWAY_JWT_SECRET": STRONG_JWT, "GATEWAY_METRICS_TOKEN": "m" * 16}
    )
    assert settings.metrics_token == "m" * 16
    # RS256: the HS256 length rule is not about a public key.
    refuse_unsafe_secrets({"GATEWAY_JWT_ALGORITHM": "RS256", "GATEWAY_JWT_SECRET": "x"})


def test_the_secret_make_run_generates_passes(tmp_path):
    from queue_pipelines.sandbox.dev import _gateway_env

    env = _gateway_env(tmp_path, {})
    settings = settings_from_env(env)
    assert len(settings.jwt.key.encode()) >= 32


def test_production_mode_refuses_placeholders_in_the_code_location_check():
    env = {
        "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
        "WEBHOOK_SECRET": "whsec_b3duIHNlY3JldCBvZiBvdXJz",
        "REDIS_URL": "rediss://:CHANGE-ME@redis.example.internal:6380/0",
    }
    with pytest.raises(SandboxSecretError) as refused:
        load(env).refuse_sandbox_secrets()
    assert "REDIS_URL" in str(refused.value)
    assert "CHANGE-ME" not in str(refused.value)
    # The example's own STRIPE_SECRET_KEY is a placeholder too, and named as one.
    with pytest.raises(SandboxSecretError, match="STRIPE_SECRET_KEY"):
        load({**env, "STRIPE_SECRET_KEY": "CHANGE-ME"}).refuse_sandbox_secrets()
    load({**env, "REDIS_URL": "rediss://:s3cr3t@redis.internal:6380/0"}).refuse_sandbox_secrets()
