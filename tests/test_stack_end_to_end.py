"""End to end against a real `dagster-daemon` and webserver (SQLite storage): requests enqueued
by the CLI become runs the daemon launches, visible through GraphQL with their tags, and
succeed; their entries are acked and their charges made once. A batch with a declined card is
a failed run that is not retried, and the UI shows it as such, in a real browser."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.parse
import uuid
from pathlib import Path

import pytest

from queue_pipelines import tags
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import (
    charges_by_key,
    cli,
    enqueue_payments,
    intake_left,
    outcomes_by_key,
    payment_line,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack_prefix(redis_url):
    import redis

    prefix = f"qptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, stack_prefix, localstripe_url, mail_sink):
    with dagster_stack(
        tmp_path_factory.mktemp("stack"),
        redis_url=redis_url,
        key_prefix=stack_prefix,
        stripe_url=localstripe_url,
        smtp_port=mail_sink.port,
    ) as running:
        yield running


@pytest.fixture
def stack_intake(redis_url, stack_prefix):
    from resources import RedisResource

    return RedisResource(url=redis_url, key_prefix=stack_prefix).intake()


@pytest.fixture(scope="module")
def served(stack, redis_url, stack_prefix):
    """Three payments of one tenant enqueued through the CLI and waited for until settled."""
    from resources import RedisResource

    intake = RedisResource(url=redis_url, key_prefix=stack_prefix).intake()
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    keys = [f"e2e-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    enqueue_payments(redis_url, stack_prefix, tenant, keys)

    def settled():
        runs = stack.runs({tags.TENANT: tenant})
        done = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
        return done and intake_left(intake, "payment") == (0, 0) and runs

    runs = wait_until(settled, 600, "the payments to be run and acked", interval=2, stack=stack)
    return tenant, keys, runs


@pytest.fixture(scope="module")
def declined(stack, redis_url, stack_prefix):
    """One tenant's card that pays and card that is declined, enqueued through the CLI in one
    go, waited for until both are settled; their outcomes by key."""
    from resources import RedisResource

    intake = RedisResource(url=redis_url, key_prefix=stack_prefix).intake()
    tenant = f"tenant-{uuid.uuid4().hex[:10]}"
    lines = [json.loads(payment_line(tenant, key)) for key in ("pays", "declined")]
    lines[1]["payload"]["payment_method"] = "pm_card_chargeCustomerFail"
    out = cli(redis_url, stack_prefix, "enqueue", "--file", "-",
              stdin="\n".join(json.dumps(line) for line in lines) + "\n")  # fmt: skip
    assert "enqueued 2, rejected 0" in out, out

    def settled():
        found = outcomes_by_key(intake, "payment", tenant, ["pays", "declined"])
        runs = stack.runs({tags.TENANT: tenant})
        ended = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
        return len(found) == 2 and ended and (found, runs)

    found, runs = wait_until(settled, 600, "the two payments to be settled", interval=2,
                             stack=stack)  # fmt: skip
    return tenant, found, runs


def test_a_declined_card_fails_its_run_which_is_not_retried(declined, stack_intake):
    tenant, found, runs = declined
    assert (found["pays"].status, found["declined"].status) == ("succeeded", "failed")
    [failed] = [r for r in runs if r["runId"] == found["declined"].run_id]
    assert failed["status"] == "FAILURE"
    # An op failure: Dagster's run retries leave it alone (dagster.yaml), no retry exists.
    assert failed["tags"].get("dagster/will_retry") != "true"
    assert all(r["tags"].get("dagster/parent_run_id") != failed["runId"] for r in runs)
    # Dead-lettered once, as before; the card that paid is acked.
    letters = [d for d in stack_intake.dead_letters() if (d.get("request_key") or "").startswith(
        f"payment:{tenant}:")]  # fmt: skip
    assert [d["request_key"] for d in letters] == [f"payment:{tenant}:declined"]
    assert letters[0]["run_id"] == failed["runId"]
    assert found["pays"].run_id in {r["runId"] for r in runs}


def test_cli_requests_become_tagged_runs_that_succeed_and_are_acked(
    served, stack_intake, localstripe_url
):
    tenant, keys, runs = served

    # A run may fail from outside its steps (on a loaded machine: a start timeout); run
    # retries then launch it again. No other failure is allowed.
    assert "SUCCESS" in {r["status"] for r in runs}, runs
    for run in runs:
        if run["status"] != "SUCCESS":
            assert run["tags"].get("dagster/will_retry") == "true", run
            retry = next(r for r in runs if r["runId"] == run["tags"]["dagster/auto_retry_run_id"])
            assert retry["status"] == "SUCCESS", retry
    for run in runs:
        assert run["tags"][tags.JOB_TYPE] == "payment"
        assert run["tags"][tags.TENANT] == tenant
        assert run["jobName"] == "payment_job"
        # The daemon's sensor launched it, not the test.
        assert run["tags"]["dagster/sensor_name"] == "payment_intake_sensor"
    assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}
    assert letters_of(stack_intake, tenant) == []
    # Only the tags an operator filters on (docs/operations.md); the batch size is not one.
    assert {k for r in runs for k in r["tags"] if k.startswith("queue/")} <= {
        tags.TENANT,
        tags.JOB_TYPE,
        tags.BATCH,
        tags.SANDBOX,
        tags.REQUEST_KEY,
    }


BACKLOG_QUERY = """
query Backlog($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1) { description metadataEntries { label } } }
  }
}
"""


def test_the_daemon_records_the_intake_backlog_on_its_assets(served, stack):
    # intake_backlog_sensor's first tick comes as the daemon starts, then every 30 s.
    def recorded():
        reply = stack.graphql(BACKLOG_QUERY, {"path": ["intake_backlog", "payment"]})
        return reply["assetOrError"].get("assetMaterializations")

    [latest] = wait_until(recorded, 120, "a materialization of intake_backlog/payment",
                          stack=stack)  # fmt: skip
    labels = {entry["label"] for entry in latest["metadataEntries"]}
    assert {"waiting", "in_flight", "oldest_age_seconds", "dead_letters", "tenants"} <= labels
    assert latest["description"].startswith("payment: ")


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def letters_of(intake, tenant: str) -> list[dict]:
    """The dead letters of one tenant's requests (other tests of the module leave theirs)."""
    return [
        d for d in intake.dead_letters()
        if tenant in (d.get("request_key") or "") or tenant in d["fields"].get("envelope", "")
    ]  # fmt: skip


def need_chromium() -> None:
    if not CHROMIUM.exists():
        message = "Debian's chromium is needed: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_runs_page_in_chromium_lists_the_runs_with_their_tenant_tag(served, stack, tmp_path):
    need_chromium()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    tenant, _keys, runs = served
    query = urllib.parse.quote(f"tag:{tags.TENANT}={tenant}")
    url = f"http://127.0.0.1:{stack.webserver_port}/runs?q%5B0%5D={query}"
    shot = tmp_path / "runs-page.png"
    with sync_playwright() as playwright:
        # Playwright cannot download its own browser here; root needs --no-sandbox.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(url, timeout=120_000)
            for run in runs:
                page.get_by_text(run["runId"][:8]).first.wait_for(timeout=120_000)
            page.get_by_text(f"{tags.TENANT}: {tenant}").first.wait_for(timeout=60_000)
            # No "Join the Dagster community" dialog over the list on a first visit
            # (dagster.yaml: nux enabled false).
            with contextlib.suppress(PlaywrightTimeout):
                page.get_by_text("Join the Dagster community").wait_for(timeout=5_000)
            assert not page.get_by_text("Join the Dagster community").is_visible()
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()

    assert all(run["runId"][:8] in text for run in runs)
    assert text.count(f"{tags.TENANT}: {tenant}") >= len(runs), text[:2000]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "runs-page.png")


def test_a_declined_cards_run_shows_as_failed_with_the_paid_cards_payment_intent_in_chromium(
    declined, stack, localstripe_url, tmp_path
):
    need_chromium()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    tenant, found, _runs = declined
    run_id = found["declined"].run_id
    assert found["pays"].run_id == run_id, "one batch expected: both were enqueued at once"
    [intent] = payment_intent_ids(localstripe_url, tenant)
    base = f"http://127.0.0.1:{stack.webserver_port}"
    query = urllib.parse.quote(f"tag:{tags.TENANT}={tenant}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            # The Runs list marks it: its row's status is Failure.
            page.goto(f"{base}/runs?q%5B0%5D={query}", timeout=120_000)
            # (The tenant's one payment run; its notification run, the decline's e-mail, may
            # be listed too, queued or succeeded.)
            page.get_by_text(run_id[:8]).first.wait_for(timeout=120_000)
            page.get_by_text("Failure", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "failed-run-list.png"), full_page=True)
            # The run page: failed, saying why, with the outcomes table on the step failure.
            page.goto(f"{base}/runs/{run_id}", timeout=120_000)
            page.get_by_text("failed for good").first.wait_for(timeout=120_000)
            # The table is drawn inside the failure's log row; a long row is folded behind
            # Dagster's "View full message".
            with contextlib.suppress(PlaywrightTimeout):
                page.get_by_text(intent).first.wait_for(timeout=10_000)
            if not page.get_by_text(intent).first.is_visible():
                page.get_by_text("View full message").last.click(timeout=30_000)
            page.get_by_text(intent).first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "failed-run.png"), full_page=True)
            table = page.inner_text("body")
        finally:
            browser.close()

    assert intent in table and "card declined" in table


def payment_intent_ids(stripe_url: str, tenant: str) -> list[str]:
    from resources import StripeResource

    client = StripeResource(secret_key="sk_test_queue_pipelines", api_base=stripe_url)
    intents = client.api().client().v1.payment_intents.list(params={"limit": 100})
    return [
        i.id for i in intents.auto_paging_iter()
        if i.metadata is not None and i.metadata.to_dict().get("tenant_id") == tenant
        and i.status == "succeeded"
    ]  # fmt: skip


def test_replaying_a_dead_letter_of_a_payment_that_succeeded_charges_nothing_more(
    served, stack, stack_intake, redis_url, stack_prefix, localstripe_url
):
    tenant, keys, _runs = served
    # A dead letter of a request that had in fact succeeded (as a run failed from outside its
    # steps left them before run retries): the original entry's fields, as the intake keeps them.
    letter_id = stack_intake.client.xadd(
        stack_intake.dead_letter_key,
        {
            "stream": stack_intake.stream_key("payment"),
            "entry_id": "1-0",
            "reason": "run x failed: marked as failed from outside the execution context",
            "run_id": "x",
            "request_key": f"payment:{tenant}:{keys[0]}",
            "fields": json.dumps({"envelope": payment_line(tenant, keys[0])}),
            "dead_lettered_at": "2026-01-01T00:00:00+00:00",
        },
    )

    out = cli(redis_url, stack_prefix, "dlq", "replay", letter_id, "--yes")
    assert f"replayed {letter_id}" in out

    wait_until(
        lambda: intake_left(stack_intake, "payment") == (0, 0), 300,
        "the replayed entry to be acked", stack=stack,
    )  # fmt: skip
    assert letters_of(stack_intake, tenant) == []
    assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}


def test_replaying_a_fixed_bad_request_processes_it(
    stack, stack_intake, redis_url, stack_prefix, localstripe_url
):
    tenant, key = f"tenant-{uuid.uuid4().hex[:10]}", f"fix-{uuid.uuid4().hex[:6]}"
    bad = json.loads(payment_line(tenant, key))
    bad["payload"]["amount"] = 0
    stack_intake.ensure_group("payment")
    stack_intake.client.xadd(stack_intake.stream_key("payment"), {"envelope": json.dumps(bad)})

    [letter] = wait_until(
        lambda: [d for d in stack_intake.dead_letters() if key in d["fields"].get("envelope", "")],
        300, "the bad request to be dead-lettered", stack=stack,
    )  # fmt: skip
    assert letter["reason"].startswith("rejected: payload.amount")

    cli(redis_url, stack_prefix, "dlq", "replay", letter["id"], "--yes",
        "--payload", '{"amount": 1500}')  # fmt: skip

    wait_until(
        lambda: charges_by_key(localstripe_url, tenant) and intake_left(stack_intake, "payment")
        == (0, 0), 600, "the fixed request to be charged and acked", stack=stack,
    )  # fmt: skip
    assert charges_by_key(localstripe_url, tenant) == {key: 1}
    assert letters_of(stack_intake, tenant) == []
