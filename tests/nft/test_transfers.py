"""Transfer requests through the intake: a ticket minted by the intake to a custodial wallet
is moved on resale by nft_transfer_job, once per request, and only by the tenant it was minted
for (solana-py against a JSON-RPC endpoint over LiteSVM, Redis, the PostgreSQL ledger)."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.cli import main
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import ENVELOPE_FIELD
from queue_pipelines.metrics.run_totals import RunTotals
from queue_pipelines.nft.holders import require_minted_for
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.solana_fixtures import holder, mint_to_payer


@pytest.fixture
def nft_resources(resources, rpc_solana, metadata_store) -> dict:
    """The session's resources (Redis, ledger, SMTP sink, webhooks) plus Solana."""
    return {**resources, "solana": rpc_solana, "metadata_store": metadata_store}


def transfer_envelope(tenant: str, key: str, mint: str, to_wallet: Pubkey, **payload) -> Envelope:
    return Envelope(
        type="transfer",
        tenant_id=tenant,
        idempotency_key=key,
        payload={"mint": mint, "to_wallet": str(to_wallet), **payload},
    )


def test_a_resale_moves_the_ticket_once_and_only_for_the_tenant_it_was_minted_for(
    instance, nft_resources, intake, tenant, redis_url, key_prefix
):
    totals = RunTotals(instance)
    before = totals.refresh()
    mint, payer = mint_to_payer(instance, nft_resources, intake, tenant)
    buyer = Keypair().pubkey()
    transfers = IntakeHarness(instance, nft_resources, "transfer")

    # Another tenant asks for the same ticket while the custodial payer still holds it: only
    # the tenant check stands in its way.
    intruder = f"{tenant}-other"
    intake.enqueue(transfer_envelope(intruder, "grab", mint, Keypair().pubkey()))
    assert transfers.drain() == 1
    [refused] = outcome_rows(transfers.results[-1])
    assert (refused["status"], refused["attempts"]) == ("failed", 1)
    [letter] = intake.dead_letters()
    assert f"ticket {mint} was not minted by this service for tenant {intruder}" in letter["reason"]
    assert tenant not in letter["reason"].replace(intruder, "")  # the owner stays unsaid
    assert holder(nft_resources["solana"], mint) == payer

    # The tenant's resale, from the CLI, and a duplicate of it in the same batch.
    argv = ["--redis-url", redis_url, "--prefix", key_prefix, "enqueue", "transfer",
            "--tenant", tenant, "--key", "resale-1", "--mint", mint,
            "--to-wallet", str(buyer), "--from-wallet", str(payer), "--order-id", "r-1"]  # fmt: skip
    for _ in range(2):
        assert main(argv, out=io.StringIO(), err=io.StringIO()) == 0
    assert transfers.drain() == 1
    [moved] = outcome_rows(transfers.results[-1])
    assert (moved["status"], moved["transferred"]) == ("succeeded", "now")
    assert (moved["from"], moved["to"], moved["order_id"]) == (str(payer), str(buyer), "r-1")
    assert moved["signature"]
    assert holder(nft_resources["solana"], mint) == buyer
    assert intake.client.xlen(intake.stream_key("transfer")) == 0

    # The same request once more, after the intake forgot its outcome: the effect ledger
    # answers with the first transfer's signature, and nothing is sent to the chain.
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))
    intake.enqueue(
        transfer_envelope(tenant, "resale-1", mint, buyer, from_wallet=str(payer), order_id="r-1")
    )
    assert transfers.drain() == 1
    [again] = outcome_rows(transfers.results[-1])
    assert (again["status"], again["transferred"]) == ("succeeded", "earlier")
    assert again["signature"] == moved["signature"]
    assert holder(nft_resources["solana"], mint) == buyer
    assert len(intake.dead_letters()) == 1  # only the intruder's

    # Metrics count requests from the outcomes rows: the replay is not a second transfer.
    after = totals.refresh()
    moved = after.family("transfers") - before.family("transfers")
    assert moved == Counter({"success": 1, "failure": 1})
    # The intruder's run failed (its one request failed for good); the resale and its replay
    # succeeded.
    runs = {status: after.runs[("transfer", status)] - before.runs[("transfer", status)]
            for status in ("success", "failure")}  # fmt: skip
    assert runs == {"success": 2, "failure": 1}


def test_bad_transfer_requests_are_dead_lettered_with_a_reason(
    instance, nft_resources, intake, tenant
):
    mint, payer = mint_to_payer(instance, nft_resources, intake, tenant)
    stream = intake.stream_key("transfer")
    intake.ensure_group("transfer")
    good = json.loads(transfer_envelope(tenant, "x", mint, Keypair().pubkey()).model_dump_json())

    def variant(key: str, **payload_changes) -> str:
        envelope = json.loads(json.dumps(good))
        envelope["idempotency_key"] = key
        envelope["payload"].update(payload_changes)
        return json.dumps(envelope)

    unknown = str(Keypair().pubkey())  # a valid address this service minted nothing at
    bad = {
        "bad mint": variant("m", mint="z" * 44),
        "short to_wallet": variant("w", to_wallet=str(payer)[:-3]),
        "unknown mint": variant("u", mint=unknown),
        "wrong seller": variant("s", from_wallet=str(Keypair().pubkey())),
    }
    ids = {name: intake.client.xadd(stream, {ENVELOPE_FIELD: raw}) for name, raw in bad.items()}
    transfers = IntakeHarness(instance, nft_resources, "transfer")

    assert transfers.drain() == 1

    letters = {letter["entry_id"]: letter["reason"] for letter in intake.dead_letters()}
    reasons = {name: letters[entry_id] for name, entry_id in ids.items()}
    assert "payload.mint" in reasons["bad mint"]
    assert "not a base58 Solana address" in reasons["bad mint"]
    assert "payload.to_wallet" in reasons["short to_wallet"]
    assert (
        f"ticket {unknown} was not minted by this service for tenant {tenant}"
        in (reasons["unknown mint"])
    )
    assert f"ticket {mint} is held by {payer}, not the seller" in reasons["wrong seller"]
    assert holder(nft_resources["solana"], mint) == payer


def test_a_mint_recorded_before_address_rows_is_found_by_its_tenants_scan(ledger, tenant):
    """Mints recorded without the `mint-address` row (before it existed) still bind their
    ticket to their tenant; `_` in a tenant id is no LIKE wildcard in the scan."""
    mint = str(Keypair().pubkey())
    owner_tenant = f"{tenant}-abc"
    ledger.claim(f"mint:{owner_tenant}:old", "mint", "run-old")
    ledger.record(f"mint:{owner_tenant}:old", {"mint": mint, "owner": "x"})

    require_minted_for(ledger, owner_tenant, mint)
    for other in (f"{tenant}-a_c", f"{tenant}-ab", tenant):
        with pytest.raises(PermanentError, match="was not minted by this service"):
            require_minted_for(ledger, other, mint)
