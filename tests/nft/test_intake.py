"""Mint requests through the intake: sensor ticks → mint_job runs on the cluster code path
(solana-py against a JSON-RPC endpoint over LiteSVM) → one NFT per request, whatever repeats."""

from __future__ import annotations

import json
import logging

import dagster as dg
import pytest
from solders.keypair import Keypair

from queue_pipelines.intake.streams import ENVELOPE_FIELD
from queue_pipelines.jobs.mint import mint_job
from queue_pipelines.jobs.wallet_balance import wallet_balance_job
from queue_pipelines.metrics.run_totals import RunTotals
from queue_pipelines.nft.holders import holds
from queue_pipelines.providers.webhook_signing import new_secret
from resources import NotificationSettingsResource, NotifierResource, WebhookResource
from tests.conftest import TEST_WEBHOOK_SECRET, with_notifier
from tests.support.harness import IntakeHarness, outcome_rows
from tests.support.solana_fixtures import mint_envelope, token_2022_mints
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def mint_resources(resources, rpc_solana, metadata_store) -> dict:
    """The session's resources (Redis, ledger, SMTP sink, webhooks) plus Solana."""
    return {**resources, "solana": rpc_solana, "metadata_store": metadata_store}


def solana_errors(calls) -> dict[tuple, int]:
    """The Solana calls of the runs so far that did not end `ok`, counted by kind."""
    return {key: h.count for key, h in calls.items() if key[0] == "solana" and key[2] != "ok"}


def test_twenty_requests_with_five_duplicates_make_fifteen_nfts_and_reexecution_adds_none(
    instance, mint_resources, intake, tenant, rpc_ledger, mail_sink, monkeypatch
):
    wallets = [Keypair().pubkey() for _ in range(15)]
    buyer = f"fan@{tenant}.example"

    def request(i: int):
        return mint_envelope(tenant, f"k{i}", wallets[i], i, buyer_email=buyer)

    envelopes = [request(i) for i in range(15)]
    envelopes += [request(i) for i in range(0, 15, 3)]
    assert len(envelopes) == 20
    # The instance is the session's: other tests' runs may have had Solana errors on purpose.
    errors_before = solana_errors(RunTotals(instance).refresh().provider_calls)
    intake.enqueue_many(envelopes)
    harness = IntakeHarness(instance, mint_resources, "mint")

    assert harness.drain() == 1  # one batch; the duplicates wait on it and are acked with it

    [result] = harness.results
    assert result.success
    mints = token_2022_mints(rpc_ledger.rpc.ledger)
    assert len(mints) == 15
    assert all((s.supply, s.decimals, s.mint_authority) == (1, 0, None) for _, s in mints)
    chain = mint_resources["solana"].chain()
    rows = outcome_rows(result)
    minted = {row["owner"]: row["mint"] for row in rows}
    assert {row["status"] for row in rows} == {"succeeded"}
    for wallet in wallets:
        assert holds(chain, _pubkey(minted[str(wallet)]), wallet)
    assert intake.client.xlen(intake.stream_key("mint")) == 0
    # One "your ticket is in your wallet" e-mail per NFT, none for the duplicates.
    assert len(mail_sink.to(buyer)) == 15
    # The run's Solana calls reach the metrics: at least one transaction per mint, no errors.
    calls = RunTotals(instance).refresh().provider_calls
    sent = calls[("solana", "send_and_confirm_transaction", "ok")]
    assert sent.count >= 15
    assert solana_errors(calls) == errors_before

    monkeypatch.setenv("QP_TEST_SMTP_PORT", str(mint_resources["notifier"].smtp.port))
    monkeypatch.setenv("QP_TEST_SOLANA_URL", rpc_ledger.url)
    monkeypatch.setenv("QP_TEST_PAYER_FILE", mint_resources["solana"].payer_keypair_path)
    monkeypatch.setenv("QP_TEST_LEDGER_URL", mint_resources["effect_ledger"].database_url)
    monkeypatch.setenv("QP_TEST_METADATA_DIR", mint_resources["metadata_store"].directory)
    monkeypatch.setenv("QP_TEST_REDIS_URL", mint_resources["redis"].url)
    monkeypatch.setenv("QP_TEST_REDIS_PREFIX", mint_resources["redis"].key_prefix)
    # The intake has forgotten the outcomes: the re-execution works through every request,
    # and the effect ledger answers for the mints and the e-mails.
    intake.client.delete(*intake.client.keys(f"{intake.prefix}:outcome:*"))
    with dg.execute_job(
        dg.reconstructable(mint_job_with_test_resources),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=result.run_id),
    ) as reexecution:
        assert reexecution.success
        replayed = outcome_rows(reexecution)

    assert {row["owner"]: row["mint"] for row in replayed} == minted
    assert {(row["minted"], row["email"]) for row in replayed} == {("earlier", "sent earlier")}
    assert len(token_2022_mints(rpc_ledger.rpc.ledger)) == 15
    assert len(mail_sink.to(buyer)) == 15  # re-executing sent no second e-mail


def _pubkey(value: str):
    from solders.pubkey import Pubkey

    return Pubkey.from_string(value)


def mint_job_with_test_resources() -> dg.JobDefinition:
    """mint_job bound to the test's endpoint, rebuilt in whichever process runs it."""
    import os

    from resources import (
        EffectLedgerResource,
        MetadataStoreResource,
        NotificationSettingsResource,
        NotifierResource,
        RedisResource,
        SmtpResource,
        SolanaResource,
        WebhookResource,
    )
    from tests.conftest import TEST_WEBHOOK_SECRET

    resources = {
        "notifier": NotifierResource(
            smtp=SmtpResource(
                host="127.0.0.1", port=int(os.environ["QP_TEST_SMTP_PORT"]), security="none"
            ),
            webhooks=WebhookResource(secret=TEST_WEBHOOK_SECRET),
            notification_settings=NotificationSettingsResource(),
        ),
        "solana": SolanaResource(
            rpc_url=os.environ["QP_TEST_SOLANA_URL"],
            payer_keypair_path=os.environ["QP_TEST_PAYER_FILE"],
        ),
        "effect_ledger": EffectLedgerResource(database_url=os.environ["QP_TEST_LEDGER_URL"]),
        "redis": RedisResource(
            url=os.environ["QP_TEST_REDIS_URL"], key_prefix=os.environ["QP_TEST_REDIS_PREFIX"]
        ),
        "metadata_store": MetadataStoreResource(
            directory=os.environ["QP_TEST_METADATA_DIR"], base_url="http://127.0.0.1:1/metadata"
        ),
    }
    return dg.Definitions(jobs=[mint_job], resources=resources).resolve_job_def("mint_job")


def test_bad_mint_requests_are_dead_lettered_with_a_reason(
    instance, mint_resources, intake, tenant, rpc_ledger
):
    stream = intake.stream_key("mint")
    intake.ensure_group("mint")
    good = json.loads(mint_envelope(tenant, "x", Keypair().pubkey()).model_dump_json())

    def variant(key: str, **payload_changes) -> str:
        envelope = json.loads(json.dumps(good))
        envelope["idempotency_key"] = key
        envelope["payload"].update(payload_changes)
        return json.dumps(envelope)

    bad = {
        "invalid wallet": variant("w", wallet="z" * 44),
        "empty name": variant("n", name=""),
        "blank name": variant("b", name="   "),
        "uri over the limit": variant("u", uri="https://x.example/" + "a" * 200),
    }
    ids = {name: intake.client.xadd(stream, {ENVELOPE_FIELD: raw}) for name, raw in bad.items()}
    intake.client.xadd(stream, {ENVELOPE_FIELD: variant("ok")})
    harness = IntakeHarness(instance, mint_resources, "mint")

    assert harness.drain() == 1

    letters = {letter["entry_id"]: letter["reason"] for letter in intake.dead_letters()}
    reasons = {name: letters[entry_id] for name, entry_id in ids.items()}
    assert "payload.wallet" in reasons["invalid wallet"]
    assert "not a base58 Solana address" in reasons["invalid wallet"]
    assert "payload.name: String should have at least 1 character" in reasons["empty name"]
    assert "payload.name" in reasons["blank name"] and "blank" in reasons["blank name"]
    assert "payload.uri: String should have at most 200 characters" in reasons["uri over the limit"]
    assert len(token_2022_mints(rpc_ledger.rpc.ledger)) == 1


def test_a_payer_without_funds_fails_the_request_permanently_and_dead_letters_it(
    instance, mint_resources, intake, tenant, rpc_ledger
):
    solana = mint_resources["solana"]
    payer = solana.payer().pubkey()
    rpc_ledger.rpc.ledger.svm.set_account(
        payer, _emptied(rpc_ledger.rpc.ledger.svm.get_account(payer))
    )
    intake.enqueue(mint_envelope(tenant, "poor", Keypair().pubkey()))
    harness = IntakeHarness(instance, mint_resources, "mint")

    harness.drain()

    [result] = harness.results
    [row] = outcome_rows(result)
    assert (row["status"], row["attempts"]) == ("failed", 1)  # permanent: not retried
    [letter] = intake.dead_letters()
    assert f"payer wallet {payer} holds 0.000000000 SOL" in letter["reason"]
    assert "fund it" in letter["reason"]


def _emptied(account):
    from solders.account import Account

    return Account(lamports=0, data=bytes(account.data), owner=account.owner, executable=False)


def test_an_expired_blockhash_is_retried_for_that_request(
    instance, mint_resources, intake, tenant, rpc_ledger
):
    rpc_ledger.rpc.expire_blockhashes = 1
    intake.enqueue(mint_envelope(tenant, "retry", Keypair().pubkey()))
    harness = IntakeHarness(instance, mint_resources, "mint")

    assert harness.drain() == 1

    [result] = harness.results
    assert result.success
    [row] = outcome_rows(result)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    assert len(token_2022_mints(rpc_ledger.rpc.ledger)) == 1


def test_mint_job_tells_the_buyer_and_the_platform_once(
    instance, mint_resources, intake, tenant, mail_sink
):
    buyer = f"nft-{tenant}@example.com"
    with WebhookReceiver(new_secret()) as receiver:
        webhooks = WebhookResource(secret=receiver.secret, nft_url=receiver.url)
        harness = IntakeHarness(instance, with_notifier(mint_resources, webhooks=webhooks), "mint")
        wallet = Keypair().pubkey()
        for _ in range(2):  # a duplicate
            intake.enqueue(mint_envelope(tenant, "told", wallet, 1, buyer_email=buyer))
        assert harness.drain() == 1
        received = list(receiver.received)

    [row] = outcome_rows(harness.results[0])
    [mail] = mail_sink.to(buyer)
    assert row["mint"] in mail.get_body(("plain",)).get_content()
    [delivery] = received
    assert delivery.signature_valid
    assert delivery.event["type"] == "nft.delivered"
    assert delivery.event["data"]["mint_address"] == row["mint"]
    assert delivery.event["data"]["wallet"] == str(wallet)


@pytest.mark.parametrize(("threshold", "succeeds"), [(1.0, True), (1000.0, False)])
def test_wallet_balance_check_alerts_and_fails_below_the_threshold(
    instance, rpc_solana, smtp_resource, mail_sink, threshold, succeeds
):
    operators = f"ops-{threshold}@example.com"
    result = wallet_balance_job.execute_in_process(
        run_config={"ops": {"alert_on_low_balance": {"config": {"threshold_sol": threshold}}}},
        resources={
            "solana": rpc_solana,
            "notifier": NotifierResource(
                smtp=smtp_resource,
                webhooks=WebhookResource(secret=TEST_WEBHOOK_SECRET),
                notification_settings=NotificationSettingsResource(operator_email=operators),
            ),
        },
        instance=instance,
        raise_on_error=False,
    )

    assert result.success is succeeds
    payer = str(rpc_solana.payer().pubkey())
    assert result.output_for_node("read_payer_balance") == 100 * 10**9
    [output] = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_OUTPUT and e.step_key == "read_payer_balance"
    ]
    recorded = output.step_output_data.metadata
    assert (recorded["wallet"].value, recorded["wallet_balance_sol"].value) == (payer, 100.0)
    # solana_wallet_balance_sol: the metrics read it from this real job's run.
    assert RunTotals(instance).refresh().wallet_balances[payer][1] == 100.0
    if succeeds:
        assert mail_sink.to(operators) == []
    else:
        [failure] = [
            e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        description = failure.step_failure_data.user_failure_data.description
        assert f"payer wallet {payer} holds 100.000000000 SOL, below the 1000.0 SOL" in description
        errors = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.level == logging.ERROR and entry.dagster_event is None
        ]
        assert any("below the 1000.0 SOL threshold" in message for message in errors)
        [alert] = mail_sink.to(operators)
        assert "Solana payer wallet low" in alert["Subject"]
