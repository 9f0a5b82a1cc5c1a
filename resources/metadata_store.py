"""Where a ticket's metadata JSON lives, so that its on-chain uri resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from queue_pipelines.failures import PermanentError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}\.json")


class MetadataStoreResource(dg.ConfigurableResource):
    """`local`: files in `directory`, served over HTTP at `base_url` (by `queue-pipelines dev`,
    which serves DAGSTER_HOME/nft-metadata under /metadata/ of the embedded Solana endpoint).
    `arweave`: a signed data transaction to the gateway at `arweave_url` (ARWEAVE_URL), paid
    by `arweave_wallet` (a JWK keyfile; secret: EnvVar("ARWEAVE_WALLET_JWK"))."""

    backend: Literal["local", "arweave"] = "local"
    directory: str = Field(default="", description="local: the directory written to.")
    base_url: str = Field(default="", description="local: the URL the directory is served at.")
    arweave_url: str = Field(
        default="", description="arweave: the gateway, e.g. https://arweave.net"
    )
    arweave_wallet: str | None = Field(default=None, description="arweave: JWK keyfile (secret).")

    def put(self, name: str, document: dict[str, Any]) -> str:
        """Store `document` as `name` (the same name always gives the same uri); return its uri."""
        if not _SAFE_NAME.fullmatch(name):
            raise PermanentError(f"invalid metadata document name {name!r}")
        body = json.dumps(document, indent=2, sort_keys=True)
        if self.backend == "arweave":
            from queue_pipelines.nft.arweave import ArweaveGateway, ArweaveWallet

            if not self.arweave_wallet:
                raise PermanentError("the arweave metadata store needs ARWEAVE_WALLET_JWK")
            gateway = ArweaveGateway(self.arweave_url, ArweaveWallet(self.arweave_wallet))
            return f"{gateway.url}/{gateway.upload(name, body.encode())}"
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(body)
        tmp.replace(target)
        return f"{self.base_url.rstrip('/')}/{name}"
