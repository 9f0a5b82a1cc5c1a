"""The configuration model (queue_pipelines/settings.py) on its own: defaults, secrets that never
show, per-type variables, the production guard, and values read at call time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from queue_pipelines.intake.registry import SPECS, run_concurrency
from queue_pipelines.settings import (
    EMBEDDED_REDIS_URL,
    EMBEDDED_SOLANA_URL,
    SANDBOX_STRIPE_KEY,
    SANDBOX_WEBHOOK_SECRET,
    SandboxSecretError,
    Settings,
    SettingsError,
    load,
    sandbox_when_unset_fields,
    secret_fields,
    variable_name,
)

LIVE_KEY = "sk_live_" + "k" * 24
OWN_WEBHOOK_SECRET = "whsec_b3duIHNlY3JldCBvZiBvdXJz"


def test_unset_means_the_embedded_defaults():
    config = load({})
    assert config.queue_key_prefix == "qp"
    assert config.intake_redis_url == EMBEDDED_REDIS_URL and config.redis_is_embedded
    assert config.stripe_is_sandbox and config.smtp_is_sandbox and config.solana_is_embedded
    assert config.home == Path.cwd() / ".dagster_home"
    assert config.effect_ledger_url == f"sqlite:///{config.home / 'effect_ledger.db'}"
    assert config.metadata_base_url == f"{EMBEDDED_SOLANA_URL}/metadata"
    assert (config.solana_commitment, config.solana_min_balance_sol) == ("confirmed", 1.0)
    assert (config.gateway_jwt_algorithm, config.gateway_max_connections) == ("HS256", 256)
    assert config.qp_dev_max_restarts == 5
    assert config.qp_batch_size == config.qp_batch_wait == config.qp_concurrency == {}


def test_an_empty_or_blank_variable_counts_as_unset():
    config = load({"REDIS_URL": "", "QUEUE_KEY_PREFIX": "  ", "GATEWAY_MAX_BODY_BYTES": ""})
    assert config.redis_is_embedded
    assert config.queue_key_prefix == "qp"
    assert config.gateway_max_body_bytes == 64 * 1024


BLANK_WHERE_UNSET_IS_SANDBOX = [
    "REDIS_URL",
    "STRIPE_SECRET_KEY",
    "DAGSTER_POSTGRES_URL",
    "SMTP_HOST",
    "WEBHOOK_SECRET",
    "SOLANA_RPC_URL",
    "SOLANA_PAYER_KEYPAIR",
    "ARWEAVE_URL",
]


@pytest.mark.parametrize("name", BLANK_WHERE_UNSET_IS_SANDBOX)
def test_a_blank_value_where_unset_means_the_sandbox_is_refused_by_name(name):
    # The others blank beside a live key (production mode), and a blank key itself, which
    # used to mean the sandbox: Stripe's sandbox URL with the sandbox's secrets.
    env = {"STRIPE_SECRET_KEY": LIVE_KEY, "WEBHOOK_SECRET": OWN_WEBHOOK_SECRET, name: " \t "}
    with pytest.raises(SettingsError) as refused:
        load(env)
    message = str(refused.value)
    assert message.startswith(f"{name} is set but blank")
    assert message.count("is set but blank") == 1


def test_every_variable_whose_absence_selects_the_sandbox_refuses_a_blank_value():
    assert [variable_name(n) for n in sandbox_when_unset_fields()] == BLANK_WHERE_UNSET_IS_SANDBOX
    with pytest.raises(SettingsError) as refused:
        load(dict.fromkeys(BLANK_WHERE_UNSET_IS_SANDBOX, "  "))
    assert [part.split()[0] for part in str(refused.value).split("; ")] == (
        BLANK_WHERE_UNSET_IS_SANDBOX
    )


def test_the_deployment_page_names_the_variables_that_refuse_a_blank_value():
    page = (Path(__file__).parents[3] / "docs" / "deployment.md").read_text()
    note = page[page.index("A value of spaces only") :].split("\n\n")[0]
    assert re.findall(r"`([A-Z_]+)`", note) == BLANK_WHERE_UNSET_IS_SANDBOX


def test_empty_still_means_unset_and_other_blank_values_too():
    # `REDIS_URL= make ...` asks for the embedded Redis; an empty value is how one unsets.
    config = load({name: "" for name in BLANK_WHERE_UNSET_IS_SANDBOX})
    assert config.redis_is_embedded and config.stripe_is_sandbox and not config.production_mode
    # A blank optional value selects no sandbox: unset, as before.
    config = load({"SMTP_USERNAME": " ", "WEBHOOK_URL_PAYMENT": " ", "STRIPE_API_BASE": " "})
    assert config.smtp_username is None and config.webhook_url_payment is None
    assert config.stripe_api_base is None


def test_set_variables_are_typed():
    config = load(
        {
            "DAGSTER_HOME": "/srv/dagster",
            "DAGSTER_POSTGRES_URL": "postgresql://app:pw@db/app",
            "GATEWAY_BODY_TIMEOUT_SECONDS": "2.5",
            "GATEWAY_METRICS_PORT": "9464",
            "STRIPE_BREAKER_FAIL_MAX": "0",
        }
    )
    assert config.home == Path("/srv/dagster")
    assert config.effect_ledger_url == "postgresql://app:pw@db/app"
    assert config.gateway_body_timeout_seconds == 2.5
    assert config.gateway_metrics_port == 9464
    # 0 is a value (the breaker off), not "unset".
    assert config.stripe_breaker_fail_max == 0


def test_secrets_are_secret_types_and_never_shown():
    env = {variable_name(name): f"value-of-{name}-9f3c" for name in secret_fields()}
    config = load(env)
    shown = repr(config) + str(config) + config.model_dump_json()
    for name in secret_fields():
        assert isinstance(getattr(config, name), SecretStr), name
        assert env[variable_name(name)] not in shown, name
    # The ones every deployment has are among them.
    assert {"redis_url", "stripe_secret_key", "webhook_secret", "gateway_jwt_secret"} <= set(
        secret_fields()
    )
    assert config.secrets() == env


def test_per_type_variables_are_keyed_by_job_type():
    config = load(
        {
            "QP_BATCH_SIZE_PAYMENT": "1",
            "QP_BATCH_SIZE_STRIPE_EVENT": "20",
            "QP_BATCH_WAIT_MINT": "0",
            "QP_CONCURRENCY_REFUND": "3",
        }
    )
    assert config.qp_batch_size == {"payment": 1, "stripe_event": 20}
    assert config.qp_batch_wait == {"mint": 0.0}
    assert config.qp_concurrency == {"refund": 3}
    assert {"payment", "stripe_event", "mint", "refund"} <= set(SPECS)
    assert variable_name("qp_batch_size") == "QP_BATCH_SIZE_<TYPE>"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QP_CONCURRENCY_MINT": "0"}, "QP_CONCURRENCY_MINT must be 1 or more (got '0')"),
        ({"QP_BATCH_WAIT_PAYMENT": "-1"}, "QP_BATCH_WAIT_PAYMENT must be 0 or more"),
        ({"QP_BATCH_SIZE_PAYMENT": "many"}, "QP_BATCH_SIZE_PAYMENT='many' is not a number"),
        ({"GATEWAY_MAX_CONNECTIONS": "0"}, "GATEWAY_MAX_CONNECTIONS must be 1 or more"),
        ({"SOLANA_MIN_BALANCE_SOL": "lots"}, "SOLANA_MIN_BALANCE_SOL='lots' is not a number"),
    ],
)
def test_a_value_that_cannot_work_is_refused_by_name(env, message):
    with pytest.raises(SettingsError) as refused:
        load(env)
    assert message in str(refused.value)


def test_settings_are_read_at_call_time(monkeypatch):
    monkeypatch.delenv("QP_CONCURRENCY_PAYMENT", raising=False)
    assert run_concurrency("payment") == SPECS["payment"].concurrency
    monkeypatch.setenv("QP_CONCURRENCY_PAYMENT", "2")
    assert run_concurrency("payment") == 2
    monkeypatch.setenv("QUEUE_KEY_PREFIX", "bench")
    assert load().queue_key_prefix == "bench"


def test_the_sandbox_stripe_key_is_not_production_mode():
    assert not load({}).production_mode
    assert not load({"STRIPE_SECRET_KEY": SANDBOX_STRIPE_KEY}).production_mode
    assert load({"STRIPE_SECRET_KEY": LIVE_KEY}).production_mode


@pytest.mark.parametrize(
    "env",
    [
        {"STRIPE_SECRET_KEY": LIVE_KEY},
        {"STRIPE_SECRET_KEY": LIVE_KEY, "WEBHOOK_SECRET": SANDBOX_WEBHOOK_SECRET},
    ],
    ids=["webhook secret unset", "webhook secret at the sandbox value"],
)
def test_production_mode_refuses_the_sandbox_webhook_secret(env):
    config = load(env)
    assert config.sandbox_secrets() == ["WEBHOOK_SECRET"]
    with pytest.raises(SandboxSecretError, match="WEBHOOK_SECRET") as refused:
        config.refuse_sandbox_secrets()
    assert SANDBOX_WEBHOOK_SECRET not in str(refused.value)


def test_production_mode_refuses_placeholders_by_name_only():
    config = load(
        {
            "STRIPE_SECRET_KEY": LIVE_KEY,
            "WEBHOOK_SECRET": OWN_WEBHOOK_SECRET,
            "REDIS_URL": "rediss://:change-me@redis.internal:6380/0",
            "WEBHOOK_URL_REFUND": "https://platform.example.internal/hooks/refund",
        }
    )
    assert config.placeholder_secrets() == ["REDIS_URL", "WEBHOOK_URL_REFUND"]
    with pytest.raises(SandboxSecretError) as refused:
        config.refuse_sandbox_secrets()
    message = str(refused.value)
    assert "REDIS_URL" in message and "WEBHOOK_URL_REFUND" in message
    assert "change-me" not in message and "example.internal" not in message


def test_production_mode_with_secrets_of_its_own_starts():
    load(
        {"STRIPE_SECRET_KEY": LIVE_KEY, "WEBHOOK_SECRET": OWN_WEBHOOK_SECRET}
    ).refuse_sandbox_secrets()
    # Sandbox mode: the sandbox values are what they are for, placeholders are not checked.
    load({"REDIS_URL": "redis://:CHANGE-ME@x/0"}).refuse_sandbox_secrets()


def test_every_field_is_documented():
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        assert field.description and extra["production"] and extra["read_by"], name
