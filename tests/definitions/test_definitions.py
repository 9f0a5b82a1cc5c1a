"""The code location as Dagster loads it: validation, the CLI, and where secrets live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from queue_pipelines import definitions, deployment
from queue_pipelines.intake.batches import Batch
from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.jobs.batch import batch_run_config
from queue_pipelines.jobs.payment import payment_job
from queue_pipelines.ledger import EffectLedger
from tests.support.stripe_sandbox import payment_intents_of

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def dagster_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in {"STRIPE_SECRET_KEY", "REDIS_URL"}}
    return {**env, "DAGSTER_HOME": str(home), **extra}


def test_definitions_validate(tmp_path):
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        env=dagster_env(tmp_path), capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_payment_job_launched_from_the_dagster_cli(
    tmp_path, tenant, localstripe_url, redis_url, postgres_url, stripe_resource, mail_sink
):
    """What an operator types: `dagster job execute` with a run config file."""
    envelope = Envelope(
        type="payment", tenant_id=tenant, idempotency_key="cli-1",
        payload=PaymentPayload(order_id="cli-1", amount=4200, currency="gbp",
                               customer_email="cli@example.com", payment_method="pm_card_visa"),
    )  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(batch_run_config(Batch.of([envelope]))))
    env = dagster_env(
        tmp_path, STRIPE_API_BASE=localstripe_url, REDIS_URL=redis_url,
        DAGSTER_POSTGRES_URL=postgres_url,
        SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail_sink.port), SMTP_SECURITY="none",
    )  # fmt: skip

    result = subprocess.run(
        [DAGSTER, "job", "execute", "-m", "queue_pipelines.definitions", "-j", "payment_job",
         "-c", str(config)],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stderr
    [intent] = payment_intents_of(stripe_resource, tenant)
    assert (intent.amount, intent.currency, intent.status) == (4200, "gbp", "succeeded")
    recorded = EffectLedger(postgres_url).get(f"payment:{tenant}:cli-1")
    assert json.loads(recorded["result"])["payment_intent_id"] == intent.id


def test_sensor_run_config_validates_against_the_job():
    envelope = Envelope(
        type="payment", tenant_id="acme", idempotency_key="k",
        payload=PaymentPayload(order_id="1", amount=100, currency="usd",
                               customer_email="a@example.com", payment_method="pm_card_visa"),
    )  # fmt: skip
    assert dg.validate_run_config(payment_job, batch_run_config(Batch.of([envelope])))


def test_secrets_come_from_the_environment_not_from_config(monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_do_not_leak_1234")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis.internal:6379/0")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://app:pg-secret@db/app")
    monkeypatch.setenv("SMTP_HOST", "smtp.internal")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-secret-5678")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0LXdlYmhvb2sta2V5LW5vdC10by1sZWFr")
    monkeypatch.setenv("SOLANA_RPC_URL", "https://rpc.example/?api-key=rpc-secret")
    monkeypatch.setenv("SOLANA_PAYER_KEYPAIR", "payer-secret-base58")
    monkeypatch.setenv("ARWEAVE_URL", "https://arweave.example")
    monkeypatch.setenv("ARWEAVE_WALLET_JWK", '{"d": "arweave-secret"}')

    defs = definitions.build_definitions()

    repository = defs.get_repository_def()
    shown = json.dumps(
        {name: repr(res) for name, res in repository.get_top_level_resources().items()}
    )
    for secret in (
        "sk_live_do_not_leak_1234",
        "hunter2",
        "pg-secret",
        "smtp-secret-5678",
        "c2VjcmV0LXdlYmhvb2sta2V5LW5vdC10by1sZWFr",
        "rpc-secret",
        "payer-secret-base58",
        "arweave-secret",
    ):
        assert secret not in shown
    assert deployment.sandbox_tags() == {}


def test_the_wallet_balance_schedule_runs_by_default_only_for_a_real_payer(monkeypatch):
    def status() -> dg.DefaultScheduleStatus:
        defs = definitions.build_definitions()
        return defs.resolve_schedule_def("wallet_balance_schedule").default_status

    # The embedded ledger's payer is funded by the sandbox: nothing to check unasked, and no
    # run at the start of `make run` (docs/operations.md).
    monkeypatch.delenv("SOLANA_RPC_URL", raising=False)
    assert status() == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("SOLANA_RPC_URL", "https://rpc.example")
    assert status() == dg.DefaultScheduleStatus.RUNNING


def test_sandbox_mode_is_tagged(monkeypatch):
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SMTP_HOST", raising=False)
    monkeypatch.delenv("SOLANA_RPC_URL", raising=False)
    assert deployment.sandbox_tags() == {"queue/sandbox": "stripe,redis,smtp,solana"}


def test_transfer_batch_run_config_validates_against_nft_transfer_job():
    from queue_pipelines.jobs.nft_transfer import nft_transfer_job

    envelope = Envelope(
        type="transfer", tenant_id="acme", idempotency_key="resale-1",
        payload={"mint": "So11111111111111111111111111111111111111112",
                 "to_wallet": "11111111111111111111111111111111"},
    )  # fmt: skip
    assert dg.validate_run_config(nft_transfer_job, batch_run_config(Batch.of([envelope])))
    assert nft_transfer_job.tags["queue/job_type"] == "transfer"
