"""The embedded Solana ledger: LiteSVM running the real SPL Token, Token-2022 and Associated
Token Account programs, with its accounts kept in a file so that it survives restarts.

LiteSVM holds its state in memory. To persist it, every account a successful transaction
touched (and every airdrop) is written to `accounts.json` under the state directory, and
loaded back when the ledger starts; programs and sysvars come from LiteSVM itself. History
(transactions, signatures) is not kept across restarts.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from solders.account import Account
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from queue_pipelines.nft.chain import (
    AlreadyProcessed,
    Chain,
    ChainAccount,
    classify_transaction_error,
)
from queue_pipelines.nft.token2022 import is_token_account

# What the dev payer is funded with, and topped up to, on the embedded ledger.
DEV_PAYER_LAMPORTS = 100 * 1_000_000_000


class EmbeddedLedger:
    """LiteSVM plus persistence, safe to share between threads (the JSON-RPC server's)."""

    def __init__(self, state_dir: Path | None = None):
        self.svm = LiteSVM()
        self.state_file = state_dir / "accounts.json" if state_dir else None
        self.lock = threading.RLock()
        self._accounts: dict[str, dict] = {}
        self.signatures: dict[str, str | None] = {}  # signature -> error (None: success)
        if self.state_file and self.state_file.exists():
            self._accounts = json.loads(self.state_file.read_text())
            for address, stored in self._accounts.items():
                self.svm.set_account(
                    Pubkey.from_string(address),
                    Account(
                        lamports=stored["lamports"],
                        data=base64.b64decode(stored["data"]),
                        owner=Pubkey.from_string(stored["owner"]),
                        executable=False,
                    ),
                )

    def _remember(self, addresses: Sequence[Pubkey]) -> None:
        if self.state_file is None:
            return
        for address in addresses:
            account = self.svm.get_account(address)
            if account is None or account.executable:
                self._accounts.pop(str(address), None)
                continue
            self._accounts[str(address)] = {
                "lamports": account.lamports,
                "data": base64.b64encode(bytes(account.data)).decode(),
                "owner": str(account.owner),
            }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._accounts))
        tmp.replace(self.state_file)

    def airdrop(self, address: Pubkey, lamports: int) -> str:
        with self.lock:
            result = self.svm.airdrop(address, lamports)
            if isinstance(result, FailedTransactionMetadata):
                raise RuntimeError(f"airdrop to {address} failed: {result.err()}")
            self._remember([address])
            return str(result.signature())

    def fund(self, address: Pubkey, target: int = DEV_PAYER_LAMPORTS) -> None:
        """Top `address` up to `target` lamports."""
        with self.lock:
            missing = target - (self.svm.get_balance(address) or 0)
            if missing > 0:
                self.airdrop(address, missing)

    def process(self, transaction: VersionedTransaction | Transaction):
        """Execute a signed transaction; returns LiteSVM's result and keeps what changed."""
        with self.lock:
            result = self.svm.send_transaction(transaction)
            message = transaction.message
            signature = str(transaction.signatures[0])
            if isinstance(result, FailedTransactionMetadata):
                if "AlreadyProcessed" not in str(result.err()):
                    self.signatures.setdefault(signature, str(result.err()))
            else:
                self.signatures[signature] = None
                self._remember(list(message.account_keys))
            return result


class EmbeddedChain(Chain):
    """The `Chain` interface straight onto an EmbeddedLedger in this process."""

    def __init__(self, ledger: EmbeddedLedger):
        self.ledger = ledger

    def send(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
        payer = signers[0].pubkey()
        with self.ledger.lock:
            blockhash = self.ledger.svm.latest_blockhash()
            transaction = Transaction(list(signers), Message(list(instructions), payer), blockhash)
            result = self.ledger.process(transaction)
        if isinstance(result, FailedTransactionMetadata):
            error = str(result.err())
            if "AlreadyProcessed" in error:
                raise AlreadyProcessed(str(transaction.signatures[0]))
            raise classify_transaction_error(error, list(result.meta().logs()), payer)
        return str(result.signature())

    def account(self, address: Pubkey) -> ChainAccount | None:
        found = self.ledger.svm.get_account(address)
        if found is None:
            return None
        return ChainAccount(address, found.lamports, found.owner, bytes(found.data))

    def balance(self, address: Pubkey) -> int:
        with self.ledger.lock:
            return self.ledger.svm.get_balance(address) or 0

    def rent_exempt_minimum(self, size: int) -> int:
        return self.ledger.svm.minimum_balance_for_rent_exemption(size)

    def token_accounts_for_mint(self, program_id: Pubkey, mint: Pubkey) -> list[ChainAccount]:
        with self.ledger.lock:
            accounts = self.ledger.svm.get_program_accounts(program_id)
        return [
            ChainAccount(address, account.lamports, account.owner, bytes(account.data))
            for address, account in accounts
            if is_token_account(bytes(account.data)) and bytes(account.data[:32]) == bytes(mint)
        ]


_SHARED: dict[str, EmbeddedLedger] = {}
_SHARED_LOCK = threading.Lock()


def shared_ledger(name: str, state_dir: Path | None = None) -> EmbeddedLedger:
    """One ledger per name in this process: every resource built with the same name (each
    run of `execute_in_process`, say) sees the same accounts."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = EmbeddedLedger(state_dir)
        return _SHARED[name]
