"""End to end against a real `dagster-daemon` and webserver (SQLite storage): requests enqueued
by the CLI become runs the daemon launches, visible through GraphQL with their tags, and
succeed; their entries are acked and their charges made once."""

from __future__ import annotations

import os
import shutil
import urllib.parse
import uuid
from pathlib import Path

import pytest

from queue_pipelines import tags
from tests.support.dagster_stack import dagster_stack, wait_until
from tests.support.stack_checks import charges_by_key, enqueue_payments, intake_left

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


def test_cli_requests_become_tagged_runs_that_succeed_and_are_acked(
    served, stack_intake, localstripe_url
):
    tenant, keys, runs = served

    assert {r["status"] for r in runs} == {"SUCCESS"}, runs
    for run in runs:
        assert run["tags"][tags.JOB_TYPE] == "payment"
        assert run["tags"][tags.TENANT] == tenant
        assert run["jobName"] == "payment_job"
        # The daemon's sensor launched it, not the test.
        assert run["tags"]["dagster/sensor_name"] == "payment_intake_sensor"
    assert charges_by_key(localstripe_url, tenant) == {key: 1 for key in keys}
    assert stack_intake.dead_letters() == []


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_runs_page_in_chromium_lists_the_runs_with_their_tenant_tag(served, stack, tmp_path):
    if not CHROMIUM.exists():
        message = "Debian's chromium is needed: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
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
            page.screenshot(path=str(shot), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()

    assert all(run["runId"][:8] in text for run in runs)
    assert text.count(f"{tags.TENANT}: {tenant}") >= len(runs), text[:2000]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "runs-page.png")
