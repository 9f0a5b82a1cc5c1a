"""A ticket's metadata: the off-chain JSON document, its stored name, and the limits its
on-chain fields must keep."""

from __future__ import annotations

import hashlib
from typing import Any

from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import MintPayload

# Metaplex's limits (MAX_NAME_LENGTH, MAX_SYMBOL_LENGTH, MAX_URI_LENGTH), which wallets and
# marketplaces assume for Token-2022 metadata too; the intake schema enforces the same.
MAX_NAME_LENGTH, MAX_SYMBOL_LENGTH, MAX_URI_LENGTH = 32, 10, 200


def ticket_attributes(payload: MintPayload) -> dict[str, str]:
    attributes = payload.attributes
    return {k: str(getattr(attributes, k)) for k in ("event", "venue", "seat", "date")}


def ticket_metadata(payload: MintPayload) -> dict[str, Any]:
    """The off-chain JSON, in the Metaplex JSON standard's fields."""
    document: dict[str, Any] = {
        "name": payload.name,
        "symbol": payload.symbol,
        "description": payload.description,
        "attributes": [
            {"trait_type": k, "value": v} for k, v in ticket_attributes(payload).items()
        ],
        "properties": {"category": "image", "files": []},
    }
    if payload.image:
        document["image"] = payload.image
        document["properties"]["files"] = [
            {"uri": payload.image, "type": _image_type(payload.image)}
        ]
    return document


def _image_type(uri: str) -> str:
    suffix = uri.rsplit(".", 1)[-1].lower()
    return {
        "png": "image/png",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "gif": "image/gif",
        "svg": "image/svg+xml",
        "webp": "image/webp",
    }.get(suffix, "image/png")


def metadata_name(key: str) -> str:
    """The stored document's name: stable per request, free of tenant data."""
    return hashlib.sha256(key.encode()).hexdigest()[:40] + ".json"


def check_onchain_fields(name: str, symbol: str, uri: str) -> None:
    for what, value, limit in (
        ("name", name, MAX_NAME_LENGTH),
        ("symbol", symbol, MAX_SYMBOL_LENGTH),
        ("uri", uri, MAX_URI_LENGTH),
    ):
        if not value.strip():
            raise PermanentError(f"the ticket's {what} is empty", code="invalid_metadata")
        if len(value.encode()) > limit:
            raise PermanentError(
                f"the ticket's {what} is {len(value.encode())} bytes, over the standard's "
                f"limit of {limit}",
                code="invalid_metadata",
            )
