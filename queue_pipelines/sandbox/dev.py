"""`queue-pipelines dev` (make run): the whole service on one machine, nothing to install."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from queue_pipelines import settings
from queue_pipelines.sandbox import defaults
from queue_pipelines.sandbox.servers import (
    refuse_taken_port,
    start_localstripe,
    start_redis,
    stop,
    wait_for_port,
)
from queue_pipelines.sandbox.solana_rpc import start_embedded_solana

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _prepare_home() -> Path:
    home = settings.dagster_home().resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    # The project's dagster.yaml is the local instance's config: copied fresh on every start.
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _gateway_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The gateway refuses to start without a JWT key. Locally, with none configured, the
    launcher makes one per DAGSTER_HOME (kept in a 0600 file) and hands it over explicitly."""
    if env.get("GATEWAY_JWT_SECRET") or env.get("GATEWAY_JWT_ALGORITHM", "").upper() == "RS256":
        return env
    secret_file = home / "gateway-jwt-secret"
    if not secret_file.exists():
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(48))
    return {**env, "GATEWAY_JWT_SECRET": secret_file.read_text().strip()}


def start_gateway(port: int, home: Path, env: dict[str, str]) -> subprocess.Popen:
    refuse_taken_port(port, "the gateway")
    log = open(home / "gateway.log", "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(
        [sys.executable, "-m", "queue_pipelines.cli", "gateway", "--port", str(port)],
        env=_gateway_env(home, env),
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process, "the gateway", timeout=60)
    return process


def run_dev(ui_port: int, gateway_port: int = defaults.GATEWAY_PORT) -> int:
    # Started from a non-interactive shell, SIGINT may arrive ignored; children would inherit
    # that and outlive Ctrl-C. Catching it here gives them the default disposition instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    home = _prepare_home()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    children: list[subprocess.Popen] = []
    smtp_sink = None
    try:
        if settings.smtp_is_sandbox():
            from queue_pipelines.sandbox.outbox import start_sink

            refuse_taken_port(defaults.SMTP_SINK_PORT, "the local SMTP sink")
            smtp_sink = start_sink(settings.outbox_dir(), defaults.SMTP_SINK_PORT)
            print(
                f"local SMTP sink: 127.0.0.1:{defaults.SMTP_SINK_PORT} (mail kept in "
                f"{settings.outbox_dir()}; read it with `uv run queue-pipelines outbox`)"
            )
        if not os.environ.get("REDIS_URL"):
            children.append(
                start_redis(defaults.EMBEDDED_REDIS_PORT, home / "redis", home / "logs/redis.log")
            )
            print(f"embedded Redis: {defaults.EMBEDDED_REDIS_URL} (data in {home / 'redis'})")
        if settings.stripe_is_sandbox() and not os.environ.get("STRIPE_API_BASE"):
            children.append(
                start_localstripe(
                    defaults.SANDBOX_STRIPE_PORT,
                    home / "logs/localstripe.log",
                    state_file=home / "stripe-sandbox.pickle",
                )
            )
            print(f"Stripe sandbox (localstripe): {defaults.SANDBOX_STRIPE_URL}")
        if settings.solana_is_embedded():
            children.append(
                start_embedded_solana(
                    defaults.EMBEDDED_SOLANA_PORT,
                    settings.solana_state_dir(),
                    settings.nft_metadata_dir(),
                    home / "logs/solana.log",
                )
            )
            print(
                f"embedded Solana ledger (LiteSVM): {defaults.EMBEDDED_SOLANA_URL} "
                f"(accounts and dev payer in {settings.solana_state_dir()})"
            )
        children.append(start_gateway(gateway_port, home, env))
        print(
            f"gateway: http://127.0.0.1:{gateway_port} (POST /v1/jobs, /metrics, /health/ready; "
            f"log in {home / 'gateway.log'}; token: GATEWAY_JWT_SECRET=$(cat "
            f"{home / 'gateway-jwt-secret'}) uv run queue-pipelines gateway token --tenant demo)"
        )
        print(
            f"Dagster UI: http://127.0.0.1:{ui_port}  (instance in {home})\n"
            "In another terminal: uv run queue-pipelines enqueue payment --amount 2500 "
            "--currency usd --email ada@example.com --payment-method pm_card_visa "
            "--order-id 1042",
            flush=True,
        )
        dagster = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(ui_port),
            ],
            env=env,
            cwd=home,
        )
        children.append(dagster)
        # dagster dev shuts its webserver, daemon and code server down cleanly on SIGINT.
        signal.signal(signal.SIGTERM, lambda *_: dagster.send_signal(signal.SIGINT))
        try:
            return dagster.wait()
        except KeyboardInterrupt:
            dagster.send_signal(signal.SIGINT)
            return dagster.wait()
    except RuntimeError as exc:
        print(
            f"error: {exc}. Is another `make run` going? Stop it, or set REDIS_URL / "
            "STRIPE_API_BASE / SMTP_HOST to use servers of your own.",
            file=sys.stderr,
        )
        return 1
    finally:
        for child in reversed(children):
            stop(child, timeout=30)
        if smtp_sink is not None:
            smtp_sink.stop()
