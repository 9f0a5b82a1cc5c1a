"""Where each part of `make run` listens. The embedded defaults the production code falls back
to (the embedded Redis, the Stripe sandbox, the SMTP sink, the embedded Solana ledger and their
public values) belong to the configuration, queue_pipelines/settings.py, and are named here for
the sandbox's own use; the ports below are the sandbox's alone.

Constants only, importable without the `sandbox` extra.
"""

from queue_pipelines.settings import (
    EMBEDDED_REDIS_PORT,
    EMBEDDED_REDIS_URL,
    EMBEDDED_SOLANA_PORT,
    EMBEDDED_SOLANA_URL,
    SANDBOX_STRIPE_KEY,
    SANDBOX_STRIPE_PORT,
    SANDBOX_STRIPE_URL,
    SANDBOX_WEBHOOK_SECRET,
    SMTP_SINK_PORT,
)

__all__ = [
    "CODE_SERVER_PORT",
    "EMBEDDED_REDIS_PORT",
    "EMBEDDED_REDIS_URL",
    "EMBEDDED_SOLANA_PORT",
    "EMBEDDED_SOLANA_URL",
    "GATEWAY_PORT",
    "SANDBOX_STRIPE_KEY",
    "SANDBOX_STRIPE_PORT",
    "SANDBOX_STRIPE_URL",
    "SANDBOX_WEBHOOK_SECRET",
    "SMTP_SINK_PORT",
]

GATEWAY_PORT = 3011
# The code server `make run` starts for the daemon and the webserver to share.
CODE_SERVER_PORT = 4266
