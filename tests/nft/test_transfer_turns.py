"""Transfers of one ticket take turns: in a batch, in the batch's order; across runs and
workers, under a Redis lock per ticket. A resale chain A -> B -> C in one batch ends with C,
a transfer to the wallet that holds the ticket already sends nothing and is not counted, and
two concurrent transfers of one ticket do not both act (solana-py against a JSON-RPC endpoint
over LiteSVM, Redis, the PostgreSQL ledger, the real intake sensor and job)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import redis
from solders.keypair import Keypair

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.metrics.run_totals import RunTotals
from queue_pipelines.nft.keys import keygen_json
from queue_pipelines.nft.minting import mint_ticket_once
from queue_pipelines.nft.transfers import ticket_turns, transfer_ticket_once
from queue_pipelines.turns import Turns
from resources import SolanaResource
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.solana_fixtures import holder, mint_to_payer, ticket_payload

# How long the endpoint sits on each sendTransaction in the lock test: long enough that a
# second transfer reads the holder while the first is still being sent.
SLOW_SEND_SECONDS = 1.5


@pytest.fixture
def wallets() -> dict[str, Keypair]:
    return {"B": Keypair(), "C": Keypair()}


@pytest.fixture
def custodial_solana(rpc_ledger, rpc_solana, wallets) -> SolanaResource:
    """The service's Solana, holding the keys of B and C besides the payer (A)."""
    return SolanaResource(
        rpc_url=rpc_ledger.url,
        payer_keypair_path=rpc_solana.payer_keypair_path,
        custodial_keypairs=json.dumps([keygen_json(w) for w in wallets.values()]),
    )


@pytest.fixture
def nft_resources(resources, custodial_solana, metadata_store) -> dict:
    return {**resources, "solana": custodial_solana, "metadata_store": metadata_store}


def transfer_envelope(tenant, key, mint, to_wallet, from_wallet) -> Envelope:
    return Envelope(
        type="transfer",
        tenant_id=tenant,
        idempotency_key=key,
        payload={"mint": mint, "to_wallet": str(to_wallet), "from_wallet": str(from_wallet)},
    )


def test_a_resale_chain_in_one_batch_ends_with_its_last_buyer_and_counts_two_transfers(
    instance, nft_resources, intake, tenant, wallets, rpc_ledger
):
    totals = RunTotals(instance)
    before = totals.refresh()
    mint, a = mint_to_payer(instance, nft_resources, intake, tenant)
    b, c = wallets["B"].pubkey(), wallets["C"].pubkey()
    # In entry order: A sells to B, then B resells to C. Run at once, B -> C would find the
    # ticket still with A and fail for good (owner_mismatch).
    intake.enqueue(transfer_envelope(tenant, "resale-ab", mint, b, a))
    intake.enqueue(transfer_envelope(tenant, "resale-bc", mint, c, b))
    # A -> B's first send finds its blockhash expired (transient) and is tried again after a
    # pause: B -> C must wait for it, not take the ticket's lock in between.
    rpc_ledger.rpc.expire_blockhashes = 1
    transfers = IntakeHarness(instance, nft_resources, "transfer")

    assert transfers.drain() == 1

    rows = {row["request"]: row for row in outcome_rows(transfers.results[-1])}
    assert [(r["status"], r["transferred"], r["from"], r["to"]) for r in rows.values()] == [
        ("succeeded", "now", str(a), str(b)),
        ("succeeded", "now", str(b), str(c)),
    ]
    assert [r["attempts"] for r in rows.values()] == [2, 1]
    assert all(row["signature"] for row in rows.values())
    assert holder(nft_resources["solana"], mint) == c
    assert intake.dead_letters() == []
    moved = totals.refresh().family("transfers") - before.family("transfers")
    assert moved == Counter({"success": 2})


def test_a_transfer_to_the_wallet_that_holds_the_ticket_is_already_held_and_not_counted(
    instance, nft_resources, intake, tenant, wallets
):
    totals = RunTotals(instance)
    before = totals.refresh()
    mint, a = mint_to_payer(instance, nft_resources, intake, tenant)
    intake.enqueue(transfer_envelope(tenant, "to-itself", mint, a, a))
    transfers = IntakeHarness(instance, nft_resources, "transfer")

    assert transfers.drain() == 1

    [row] = outcome_rows(transfers.results[-1])
    assert (row["status"], row["transferred"], row["signature"]) == (
        "succeeded",
        "already held",
        "",
    )
    assert (row["from"], row["to"]) == (str(a), str(a))
    assert holder(nft_resources["solana"], mint) == a
    # Asked again after the intake forgot it: the ledger's answer, still already held.
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))
    intake.enqueue(transfer_envelope(tenant, "to-itself", mint, a, a))
    assert transfers.drain() == 1
    [again] = outcome_rows(transfers.results[-1])
    assert (again["status"], again["transferred"]) == ("succeeded", "already held")
    after = totals.refresh()
    assert after.family("transfers") - before.family("transfers") == Counter()
    assert after.runs[("transfer", "success")] - before.runs[("transfer", "success")] == 2


# Across runs: the lock ------------------------------------------------------------------


@pytest.fixture
def minted(rpc_solana, ledger, metadata_store, tenant) -> str:
    """A ticket minted for `tenant` into the payer's (custodial) wallet."""
    return mint_ticket_once(
        rpc_solana.chain(),
        rpc_solana.payer(),
        ledger,
        metadata_store.put,
        tenant_id=tenant,
        idempotency_key="primary",
        payload=ticket_payload(rpc_solana.payer().pubkey()),
        run_id="run-mint",
    ).mint


@pytest.fixture
def locks(redis_url, key_prefix) -> Turns:
    return ticket_turns(redis.Redis.from_url(redis_url), IntakeKeys(key_prefix).transfer_lock)


def transfer(solana, ledger, tenant, key, mint, to_wallet, locks, run_id):
    return transfer_ticket_once(
        solana.chain(),
        solana.payer(),
        solana.custodial(),
        ledger,
        tenant_id=tenant,
        idempotency_key=key,
        mint=mint,
        to_wallet=str(to_wallet),
        expected_owner=str(solana.payer().pubkey()),
        run_id=run_id,
        locks=locks,
    )


def concurrent_resales(rpc_ledger, rpc_solana, ledger, tenant, minted, locks, monkeypatch):
    """Two runs' transfers of one ticket from the payer, to two buyers, at the same time,
    each send held up by the endpoint; returns each one's outcome or error, and how many
    transactions were sent."""
    rpc = rpc_ledger.rpc
    handle = rpc.handle

    def slow_send(method, params):
        if method == "sendTransaction":
            time.sleep(SLOW_SEND_SECONDS)
        return handle(method, params)

    monkeypatch.setattr(rpc, "handle", slow_send)
    sent_before = rpc.calls.get("sendTransaction", 0)
    buyers = {"run-1": Keypair().pubkey(), "run-2": Keypair().pubkey()}
    ended: dict[str, object] = {}

    def run(run_id: str) -> None:
        try:
            ended[run_id] = transfer(
                rpc_solana,
                ledger,
                tenant,
                f"resale-{run_id}",
                minted,
                buyers[run_id],
                locks,
                run_id,
            )
        except Exception as exc:
            ended[run_id] = exc

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in buyers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return buyers, ended, rpc.calls.get("sendTransaction", 0) - sent_before


def test_two_runs_transfers_of_one_ticket_take_turns(
    rpc_ledger, rpc_solana, ledger, tenant, minted, locks, monkeypatch
):
    buyers, ended, sent = concurrent_resales(
        rpc_ledger, rpc_solana, ledger, tenant, minted, locks, monkeypatch
    )

    moved = [run_id for run_id, outcome in ended.items() if not isinstance(outcome, Exception)]
    assert len(moved) == 1, ended
    [refused] = [outcome for outcome in ended.values() if isinstance(outcome, Exception)]
    winner = buyers[moved[0]]
    # The second read the holder after the first had moved it: the seller no longer has it.
    assert isinstance(refused, PermanentError) and refused.code == "owner_mismatch"
    assert f"is held by {winner}, not the seller" in refused.reason
    assert sent == 1  # the second sent nothing
    assert holder(rpc_solana, minted) == winner


def test_without_the_lock_both_would_send(
    rpc_ledger, rpc_solana, ledger, tenant, minted, monkeypatch
):
    """The check of the test above: with the endpoint this slow, two transfers without the
    lock both read the payer as holder and both send."""
    _buyers, _ended, sent = concurrent_resales(
        rpc_ledger, rpc_solana, ledger, tenant, minted, None, monkeypatch
    )
    assert sent == 2


def test_a_transfer_that_waits_too_long_for_the_lock_is_transient_and_claims_nothing(
    rpc_solana, ledger, tenant, minted, locks
):
    impatient = ticket_turns(locks.client, locks.key_of, wait_seconds=0.2)
    other = locks.client.lock(locks.key_of(minted), timeout=30)
    assert other.acquire(blocking=False)
    try:
        with pytest.raises(TransientError, match="another transfer of ticket") as raised:
            transfer(rpc_solana, ledger, tenant, "waits", minted, Keypair().pubkey(), impatient,
                     "run-w")  # fmt: skip
    finally:
        other.release()
    assert raised.value.code == "transfer_in_progress"
    assert ledger.get(f"transfer:{tenant}:waits") is None
    assert holder(rpc_solana, minted) == rpc_solana.payer().pubkey()
