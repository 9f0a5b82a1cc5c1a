"""The embedded defaults: where each sandbox listens, and the public values it uses.

Constants only, importable without the `sandbox` extra: the backend selection falls back to
these when no environment variable points at the real thing.
"""

EMBEDDED_REDIS_PORT = 6399
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
SANDBOX_STRIPE_PORT = 8420
SANDBOX_STRIPE_URL = f"http://127.0.0.1:{SANDBOX_STRIPE_PORT}"
# localstripe accepts any key; this one says what it is wherever it shows up.
SANDBOX_STRIPE_KEY = "sk_test_localstripe_sandbox"
# The local SMTP sink of `make run` (no SMTP_HOST), and the webhook secret used when
# WEBHOOK_SECRET is unset: "whsec_" + base64 of a phrase that says it is not a secret.
SMTP_SINK_PORT = 8425
SANDBOX_WEBHOOK_SECRET = "whsec_cXVldWUtcGlwZWxpbmVzIGxvY2FsIHNhbmRib3ggb25seQ=="
EMBEDDED_SOLANA_PORT = 8899
EMBEDDED_SOLANA_URL = f"http://127.0.0.1:{EMBEDDED_SOLANA_PORT}"
GATEWAY_PORT = 3011
# The code server `make run` starts for the daemon and the webserver to share.
CODE_SERVER_PORT = 4266
