"""`queue-pipelines dev` (make run): the whole service on one machine, nothing to install.

Every part is a child process in a process group of its own, watched by a supervisor: the
embedded Redis, the Stripe sandbox, the Solana ledger, the gateway, and Dagster as three
processes (a code server, `dagster-daemon run`, `dagster-webserver`, as sandbox/stack.py starts
them) rather than `dagster dev`, so that each can be restarted alone and each group, with the
run workers the code server started, is ended on stop (the supervisor: sandbox/supervisor.py).
A child that dies is restarted with a log line; one that keeps dying stops the whole stack
with a one-line reason and exit code 1. Ctrl-C (or SIGTERM) stops everything and exits 0; runs
it interrupted are failed as interrupted and relaunched by run retries on the next start
(docs/guarantees.md).
"""

from __future__ import annotations

import secrets
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
    wait_for_port,
)
from queue_pipelines.sandbox.solana_rpc import start_embedded_solana
from queue_pipelines.sandbox.stack import (
    caller_env,
    spawn,
    start_code_server,
    start_daemon,
    start_webserver,
    write_instance_config,
    write_workspace,
)
from queue_pipelines.sandbox.supervisor import (
    Child,
    StackStopped,
    Supervisor,
    end_leftovers,
    say,
)

BIN = Path(sys.executable).parent
FIRST_REQUEST = (
    "enqueue payment --key order-1042 --amount 2500 --currency usd --email ada@example.com "
    "--payment-method pm_card_visa --order-id 1042 --wait"
)


def cli_command() -> str:
    """The CLI as the person who started `make run` can run it in another terminal: the
    script in this environment's bin (the project's .venv), relative to the directory they
    are in when it is inside it. `uv run` is not that: uv may not be on their PATH (the
    Makefile bootstraps it into .tools/ when it is not)."""
    script = BIN / "queue-pipelines"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _prepare_home() -> Path:
    home = settings.load().home.resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    # The project's dagster.yaml is the local instance's config: copied fresh on every start.
    write_instance_config(home)
    return home


def _gateway_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The gateway refuses to start without a JWT key. Locally, with none configured, the
    launcher makes one per DAGSTER_HOME (kept in a 0600 file) and hands it over explicitly."""
    config = settings.load(env)
    if config.gateway_jwt_secret or config.gateway_jwt_algorithm.strip().upper() == "RS256":
        return env
    secret_file = home / "gateway-jwt-secret"
    if not secret_file.exists():
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(48))
    return {**env, "GATEWAY_JWT_SECRET": secret_file.read_text().strip()}


def start_gateway(port: int, home: Path, env: dict[str, str]) -> subprocess.Popen:
    refuse_taken_port(port, "the gateway")
    process = spawn(
        [sys.executable, "-m", "queue_pipelines.cli", "gateway", "--port", str(port)],
        home, _gateway_env(home, env), home / "gateway.log",
    )  # fmt: skip
    wait_for_port(port, process, "the gateway", timeout=60)
    return process


def run_dev(ui_port: int, gateway_port: int = defaults.GATEWAY_PORT) -> int:
    # Started from a non-interactive shell, SIGINT may arrive ignored; catching it here makes
    # Ctrl-C reach this process, which then stops every child's group itself.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.default_int_handler(signal.SIGINT, None))
    home = _prepare_home()
    end_leftovers(home)
    env = caller_env(home)
    config = settings.load()
    supervisor = Supervisor(home)
    smtp_sink = None
    try:
        if config.smtp_is_sandbox:
            from queue_pipelines.sandbox.outbox import start_sink

            refuse_taken_port(defaults.SMTP_SINK_PORT, "the local SMTP sink")
            smtp_sink = start_sink(config.outbox_dir, defaults.SMTP_SINK_PORT)
            print(
                f"local SMTP sink: 127.0.0.1:{defaults.SMTP_SINK_PORT} (mail kept in "
                f"{config.outbox_dir}; read it with `{cli_command()} outbox`)"
            )
        if config.redis_is_embedded:
            supervisor.add(
                Child(
                    "redis",
                    lambda: start_redis(
                        defaults.EMBEDDED_REDIS_PORT,
                        home / "redis",
                        home / "logs/redis.log",
                        process_group=0,
                    ),
                    home / "logs/redis.log",
                )
            )
            print(f"embedded Redis: {defaults.EMBEDDED_REDIS_URL} (data in {home / 'redis'})")
        if config.stripe_is_sandbox and not config.stripe_api_base:
            supervisor.add(
                Child(
                    "stripe-sandbox",
                    lambda: start_localstripe(
                        defaults.SANDBOX_STRIPE_PORT,
                        home / "logs/localstripe.log",
                        state_file=home / "stripe-sandbox.pickle",
                        process_group=0,
                    ),
                    home / "logs/localstripe.log",
                )
            )
            print(f"Stripe sandbox (localstripe): {defaults.SANDBOX_STRIPE_URL}")
        if config.solana_is_embedded:
            supervisor.add(
                Child(
                    "solana-ledger",
                    lambda: start_embedded_solana(
                        defaults.EMBEDDED_SOLANA_PORT,
                        config.solana_state_dir,
                        config.nft_metadata_dir,
                        home / "logs/solana.log",
                        process_group=0,
                    ),
                    home / "logs/solana.log",
                )
            )
            print(
                f"embedded Solana ledger (LiteSVM): {defaults.EMBEDDED_SOLANA_URL} "
                f"(accounts and dev payer in {config.solana_state_dir})"
            )
        supervisor.add(
            Child("gateway", lambda: start_gateway(gateway_port, home, env), home / "gateway.log")
        )
        print(
            f"gateway: http://127.0.0.1:{gateway_port} (POST /v1/jobs, /metrics, /health/ready; "
            f"log in {home / 'gateway.log'}; token: {cli_command()} gateway token --tenant demo)"
        )
        workspace = write_workspace(home, defaults.CODE_SERVER_PORT)
        supervisor.add(
            Child(
                "code-server",
                lambda: start_code_server(
                    defaults.CODE_SERVER_PORT, home, env, home / "logs/code-server.log"
                ),
                home / "logs/code-server.log",
                dependents=("daemon", "webserver"),
                stop_signal=signal.SIGINT,
            )
        )
        supervisor.add(
            Child(
                "daemon",
                # At INFO the daemon logs every sensor tick, even one with nothing to do
                # ("Checking for new runs", "skipped"); what it launched and each tick's
                # outcome are on the UI's Automation page, so its own log keeps warnings and
                # errors only.
                lambda: start_daemon(
                    workspace, home, env, home / "logs/daemon.log", log_level="warning"
                ),
                home / "logs/daemon.log",
                stop_signal=signal.SIGINT,
            )
        )
        supervisor.add(
            Child(
                "webserver",
                lambda: start_webserver(
                    workspace, ui_port, home, env, home / "logs/webserver.log", log_level="warning"
                ),
                home / "logs/webserver.log",
                stop_signal=signal.SIGINT,
            )
        )
        print(
            f"Dagster UI: http://127.0.0.1:{ui_port}  (instance in {home}; daemon, webserver "
            f"and code server logs in {home / 'logs'})\n"
            f"In another terminal: {cli_command()} {FIRST_REQUEST}",
            flush=True,
        )
        supervisor.watch()
        return 0  # not reached: watch() returns by an exception
    except KeyboardInterrupt:
        say("stopping (Ctrl-C)")
        return 0
    except StackStopped as exc:
        say(f"stopping: {exc}")
        return 1
    except RuntimeError as exc:
        print(
            f"error: {exc}. Is another `make run` going? Stop it, or set REDIS_URL / "
            "STRIPE_API_BASE / SMTP_HOST to use servers of your own.",
            file=sys.stderr,
        )
        return 1
    finally:
        # A second Ctrl-C while stopping must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        if smtp_sink is not None:
            smtp_sink.stop()
        say("stopped; every part has ended")
