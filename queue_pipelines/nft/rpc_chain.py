"""The cluster backend: any Solana JSON-RPC endpoint (devnet, mainnet, a validator) through
solana-py's client.

solana-py 0.41 ships only the asynchronous `AsyncClient`; each call here runs it to
completion, so ops and sensors stay synchronous. Sending is: fetch a blockhash with its last
valid block height, sign, send with preflight (the node simulates first, so most rejections
come back at once), then poll getSignatureStatuses until the configured commitment, giving
up when the block height passes the blockhash's last valid height (a transient failure:
nothing landed, and the next attempt signs with a fresh blockhash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts, TxOpts
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from queue_pipelines.failures import TransientError
from queue_pipelines.nft.chain import (
    AlreadyProcessed,
    Chain,
    ChainAccount,
    classify_transaction_error,
)
from queue_pipelines.nft.token2022 import is_token_account
from queue_pipelines.telemetry.provider_calls import observe_provider_call

T = TypeVar("T")

_RANK = {"processed": 0, "confirmed": 1, "finalized": 2}


def _rpc_error_text(exc: RPCException) -> tuple[str, list[str]]:
    error = exc.args[0] if exc.args else exc
    message = getattr(error, "message", None) or str(error)
    logs = list(getattr(getattr(error, "data", None), "logs", None) or [])
    return message, logs


class RpcChain(Chain):
    def __init__(
        self,
        url: str,
        commitment: str = "confirmed",
        timeout_seconds: float = 30,
        poll_seconds: float = 0.4,
    ):
        self.url = url
        self.commitment = Commitment(commitment)
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def _run(self, operation: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run `call` against the node; timed as the provider call `solana`/`operation`."""

        async def with_client() -> T:
            async with AsyncClient(
                self.url, commitment=self.commitment, timeout=self.timeout_seconds
            ) as client:
                return await call(client)

        try:
            with observe_provider_call("solana", operation, self._classify):
                return asyncio.run(with_client())
        except SolanaRpcException as exc:
            raise self._classify(exc) from exc

    def _classify(self, exc: BaseException) -> TransientError | None:
        # Network errors, timeouts, HTTP 429 and 5xx: the node may recover.
        if isinstance(exc, SolanaRpcException):
            return TransientError(f"Solana RPC at {self.url} failed: {exc}", code="rpc")
        return None

    def send(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
        payer = signers[0].pubkey()

        async def send(client: AsyncClient) -> str:
            latest = (await client.get_latest_blockhash()).value
            transaction = Transaction(
                list(signers), Message(list(instructions), payer), latest.blockhash
            )
            try:
                signature = (
                    await client.send_raw_transaction(
                        bytes(transaction),
                        TxOpts(skip_confirmation=True, preflight_commitment=self.commitment),
                    )
                ).value
            except RPCException as exc:
                error, logs = _rpc_error_text(exc)
                if "AlreadyProcessed" in error or "already been processed" in error:
                    raise AlreadyProcessed(str(transaction.signatures[0])) from None
                raise classify_transaction_error(error, logs, payer) from None
            await self._confirm(client, signature, latest.last_valid_block_height, payer)
            return str(signature)

        return self._run("send_and_confirm_transaction", send)

    async def _confirm(self, client: AsyncClient, signature, last_valid_height: int, payer):
        wanted = _RANK[str(self.commitment)]
        while True:
            status = (await client.get_signature_statuses([signature])).value[0]
            if status is not None:
                if status.err is not None:
                    raise classify_transaction_error(str(status.err), [], payer)
                level = status.confirmation_status
                if level is not None and _RANK[str(level).rsplit(".", 1)[-1].lower()] >= wanted:
                    return
            elif (await client.get_block_height()).value > last_valid_height:
                raise TransientError(
                    f"transaction {signature} did not land before its blockhash expired; "
                    "retrying with a fresh one",
                    code="blockhash_expired",
                )
            await asyncio.sleep(self.poll_seconds)

    def account(self, address: Pubkey) -> ChainAccount | None:
        async def get(client: AsyncClient) -> ChainAccount | None:
            found = (await client.get_account_info(address, encoding="base64")).value
            if found is None:
                return None
            return ChainAccount(address, found.lamports, found.owner, bytes(found.data))

        return self._run("get_account_info", get)

    def balance(self, address: Pubkey) -> int:
        async def get(client: AsyncClient) -> int:
            return (await client.get_balance(address)).value

        return self._run("get_balance", get)

    def rent_exempt_minimum(self, size: int) -> int:
        async def get(client: AsyncClient) -> int:
            return (await client.get_minimum_balance_for_rent_exemption(size)).value

        return self._run("get_minimum_balance_for_rent_exemption", get)

    def token_accounts_for_mint(self, program_id: Pubkey, mint: Pubkey) -> list[ChainAccount]:
        async def get(client: AsyncClient) -> list[ChainAccount]:
            found = await client.get_program_accounts(
                program_id,
                encoding="base64",
                filters=[MemcmpOpts(offset=0, bytes=str(mint))],
            )
            return [
                ChainAccount(keyed.pubkey, keyed.account.lamports, keyed.account.owner, data)
                for keyed in found.value
                if is_token_account(data := bytes(keyed.account.data))
            ]

        return self._run("get_program_accounts", get)
