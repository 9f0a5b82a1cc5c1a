"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec 1.0.0), made and checked
by the reference library `standardwebhooks`.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
`v1,` + base64(HMAC-SHA256(key, content)), where the key is the base64 part of a
`whsec_...` secret. docs/notifications.md shows a receiver's side.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# The spec asks receivers to reject timestamps too far from their clock (replay protection).
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    pass


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret. Stricter than the library, which pads and decodes
    whatever it is given: a secret mistyped in configuration fails here, before any delivery."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("the part after 'whsec_' is not base64") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def new_secret(size: int = 32) -> str:
    """A fresh secret (the spec asks for 24 to 64 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def _webhook(secret: str) -> Webhook:
    return Webhook(secret_key(secret))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return _webhook(secret).sign(webhook_id, moment, body.decode("utf-8"))


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Check a delivery as a receiver does; returns its webhook-id or raises InvalidSignature.

    With the library's own window (`now` unset, 300 s) this is `Webhook.verify` itself; a
    given clock or window checks the timestamp here and the signature with the library."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        webhook_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split(" ")
    except (KeyError, ValueError) as exc:
        raise InvalidSignature(f"missing or malformed webhook header: {exc}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise InvalidSignature(f"timestamp {timestamp} is outside the tolerance window")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("body is not UTF-8") from None
    if now is None and tolerance_seconds == DEFAULT_TOLERANCE_SECONDS:
        try:
            _webhook(secret).verify(text, dict(lowered), json_parse=False)
        except Exception as exc:  # noqa: BLE001 - the library raises several kinds
            raise InvalidSignature(f"no signature matches: {exc}") from None
        return webhook_id
    expected = sign(secret, webhook_id, timestamp, body).encode()
    if any(hmac.compare_digest(expected, candidate.encode()) for candidate in signatures):
        return webhook_id
    raise InvalidSignature("no signature matches")
