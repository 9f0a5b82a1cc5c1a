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

    The `arweave` backend of the issue is not built yet (docs/nft.md)."""

    backend: Literal["local"] = "local"
    directory: str = Field(description="Directory the documents are written to.")
    base_url: str = Field(description="URL the directory is served at; the uri prefix.")

    def put(self, name: str, document: dict[str, Any]) -> str:
        """Write `document` as `name` (the same name always gives the same uri); return its uri."""
        if not _SAFE_NAME.fullmatch(name):
            raise PermanentError(f"invalid metadata document name {name!r}")
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
        tmp.replace(target)
        return f"{self.base_url.rstrip('/')}/{name}"
