"""`queue-pipelines dev` (make run): the whole service on one machine, nothing to install."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from queue_pipelines import settings
from queue_pipelines.embedded import start_localstripe, start_redis, stop
from queue_pipelines.nft.rpc_server import start_embedded_solana

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _prepare_home() -> Path:
    home = settings.dagster_home().resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    instance_config = home / "dagster.yaml"
    if not instance_config.exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", instance_config)
    return home


def run_dev(ui_port: int) -> int:
    # Started from a non-interactive shell, SIGINT may arrive ignored; children would inherit
    # that and outlive Ctrl-C. Catching it here gives them the default disposition instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    home = _prepare_home()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    children: list[subprocess.Popen] = []
    try:
        if not os.environ.get("REDIS_URL"):
            children.append(
                start_redis(settings.EMBEDDED_REDIS_PORT, home / "redis", home / "logs/redis.log")
            )
            print(f"embedded Redis: {settings.EMBEDDED_REDIS_URL} (data in {home / 'redis'})")
        if settings.stripe_is_sandbox() and not os.environ.get("STRIPE_API_BASE"):
            children.append(
                start_localstripe(settings.SANDBOX_STRIPE_PORT, home / "logs/localstripe.log")
            )
            print(f"Stripe sandbox (localstripe): {settings.SANDBOX_STRIPE_URL}")
        if settings.solana_is_embedded():
            children.append(
                start_embedded_solana(
                    settings.EMBEDDED_SOLANA_PORT,
                    settings.solana_state_dir(),
                    settings.nft_metadata_dir(),
                    home / "logs/solana.log",
                )
            )
            print(
                f"embedded Solana ledger (LiteSVM): {settings.EMBEDDED_SOLANA_URL} "
                f"(accounts and dev payer in {settings.solana_state_dir()})"
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
            "STRIPE_API_BASE to use servers of your own.",
            file=sys.stderr,
        )
        return 1
    finally:
        for child in reversed(children):
            stop(child, timeout=30)
