"""One interface to a Solana ledger, and what its failures mean.

Two implementations: `EmbeddedChain` (LiteSVM in this process, queue_pipelines/sandbox/solana_ledger.py)
and `RpcChain` (any JSON-RPC endpoint through solana-py, queue_pipelines/nft/rpc_chain.py).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.failures import PermanentError, ProviderError, TransientError


@dataclass(frozen=True)
class ChainAccount:
    address: Pubkey
    lamports: int
    owner: Pubkey
    data: bytes


class Chain(ABC):
    """What minting and transferring need from a ledger."""

    @abstractmethod
    def send(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
        """Sign with `signers` (the first pays the fee), send, wait for confirmation and
        return the signature; raise a classified ProviderError when it fails."""

    @abstractmethod
    def account(self, address: Pubkey) -> ChainAccount | None: ...

    @abstractmethod
    def balance(self, address: Pubkey) -> int: ...

    @abstractmethod
    def rent_exempt_minimum(self, size: int) -> int: ...

    @abstractmethod
    def token_accounts_for_mint(self, program_id: Pubkey, mint: Pubkey) -> list[ChainAccount]:
        """Every token account of `mint` (getProgramAccounts filtered on the mint field)."""


# Errors of the runtime and the system program that mean the fee payer lacks SOL.
_NO_FUNDS = re.compile(
    r"InsufficientFundsFor(Fee|Rent)|AccountNotFound|insufficient lamports|"
    r"Attempt to debit an account but found no record of a prior credit"
)
_NO_PROGRAM = re.compile(r"InvalidProgramForExecution|ProgramAccountNotFound")
_BLOCKHASH = re.compile(r"BlockhashNotFound|Blockhash not found|block height exceeded")


class AlreadyProcessed(Exception):
    """This very transaction (same signature) already landed."""


def classify_transaction_error(error: str, logs: Sequence[str], payer: Pubkey) -> ProviderError:
    """A failed transaction, as a retryable or permanent failure an operator can read."""
    text = " ".join([error, *logs])
    if _BLOCKHASH.search(text):
        return TransientError(
            f"the transaction's blockhash expired before it landed ({error}); retrying with a "
            "fresh one",
            code="blockhash_expired",
        )
    if _NO_FUNDS.search(text):
        return PermanentError(
            f"the payer wallet {payer} has too little SOL to pay for this transaction "
            f"({error}); fund it, then replay the dead letter (queue-pipelines dlq replay)",
            code="insufficient_funds",
        )
    if _NO_PROGRAM.search(text):
        return PermanentError(
            f"a program this transaction calls is not deployed on this ledger ({error})",
            code="program_missing",
        )
    detail = "; ".join(line for line in logs[-4:] if line)
    return PermanentError(
        f"transaction rejected: {error}" + (f" ({detail})" if detail else ""),
        code="transaction_failed",
    )


def require_funds(chain: Chain, payer: Pubkey, needed: int) -> None:
    """Fail before sending when the payer cannot cover `needed` lamports (rent and fees)."""
    balance = chain.balance(payer)
    if balance < needed:
        raise PermanentError(
            f"the payer wallet {payer} holds {balance / 1e9:.9f} SOL, less than the "
            f"{needed / 1e9:.9f} SOL this mint needs: fund it, then replay the dead letter (queue-pipelines dlq replay)",
            code="insufficient_funds",
        )
