"""Solana: the cluster backend (JSON-RPC) or the embedded one (LiteSVM), by configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from queue_pipelines.failures import PermanentError

if TYPE_CHECKING:  # the Solana stack loads on first use: only mint and transfer runs need it
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from queue_pipelines.nft.chain import Chain


class SolanaResource(dg.ConfigurableResource):
    """With `rpc_url`: any JSON-RPC endpoint (SOLANA_RPC_URL: devnet, mainnet, a validator, or
    the embedded endpoint `queue-pipelines dev` serves). Without: LiteSVM in this process,
    one ledger per `embedded_ledger` name, persisted under `embedded_state_dir` if given.

    The payer is `payer_keypair` (a secret: pass it with EnvVar("SOLANA_PAYER_KEYPAIR"),
    base58 or solana-keygen's JSON array), else the dev keypair at `payer_keypair_path`,
    made on first use and, on the in-process ledger, funded."""

    rpc_url: str | None = Field(default=None, description="JSON-RPC URL; unset: embedded.")
    commitment: str = Field(default="confirmed", description="processed, confirmed, finalized")
    timeout_seconds: float = 30.0
    payer_keypair: str | None = Field(default=None, description="Secret: use EnvVar.")
    payer_keypair_path: str | None = Field(
        default=None, description="Dev keypair file (solana-keygen format), made if missing."
    )
    custodial_keypairs: str | None = Field(
        default=None,
        description="Secret (EnvVar): JSON list of keypairs of custodial wallets the service "
        "may sign transfers for, besides the payer.",
    )
    embedded_ledger: str = "default"
    embedded_state_dir: str | None = None

    _payer: Any = PrivateAttr(default=None)  # Keypair, once loaded

    @property
    def embedded(self) -> bool:
        return not self.rpc_url

    def chain(self) -> Chain:
        if self.rpc_url:
            from queue_pipelines.nft.rpc_chain import RpcChain

            return RpcChain(self.rpc_url, self.commitment, self.timeout_seconds)
        # The in-process ledger is a sandbox: loaded only when no RPC URL is configured.
        from queue_pipelines.sandbox.solana_ledger import EmbeddedChain, shared_ledger

        state_dir = Path(self.embedded_state_dir) if self.embedded_state_dir else None
        return EmbeddedChain(shared_ledger(self.embedded_ledger, state_dir))

    def payer(self) -> Keypair:
        from queue_pipelines.nft.keys import load_or_create_keypair, parse_keypair

        if self._payer is None:
            if self.payer_keypair:
                payer = parse_keypair(self.payer_keypair)
            elif self.payer_keypair_path:
                payer = load_or_create_keypair(Path(self.payer_keypair_path))
                if self.embedded:
                    chain = self.chain()
                    chain.ledger.fund(payer.pubkey())
            else:
                raise PermanentError(
                    "no Solana payer configured: set SOLANA_PAYER_KEYPAIR", code="no_payer"
                )
            self._payer = payer
        return self._payer

    def custodial(self) -> dict[Pubkey, Keypair]:
        from queue_pipelines.nft.keys import parse_keypair

        wallets = [self.payer()]
        if self.custodial_keypairs:
            wallets += [
                parse_keypair(item if isinstance(item, str) else json.dumps(item))
                for item in json.loads(self.custodial_keypairs)
            ]
        return {keypair.pubkey(): keypair for keypair in wallets}
