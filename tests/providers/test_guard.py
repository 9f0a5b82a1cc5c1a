"""Provider limits on a real Redis, shared between guard instances as between run workers:
the rate limit lets no more than its budget through (counted in localstripe too), and the
circuit breaker opened by one guard stops the other's calls."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.providers.guard import (
    CircuitOpen,
    GuardUnavailable,
    ProviderGuard,
    RateLimited,
)
from tests.support.tcp_cut import TcpCut


def guard(redis_resource, provider: str, **kwargs) -> ProviderGuard:
    return ProviderGuard(
        redis_resource.client(), provider, keys=redis_resource.redis_keys(), **kwargs
    )


def test_no_more_than_the_budget_passes_across_workers(redis_resource):
    # A budget per minute, and no waiting: whatever the machine's speed, 60 attempts within
    # the minute from two workers let exactly 10 through.
    workers = [
        guard(redis_resource, "stripe", rate="10/minute", max_wait_seconds=0) for _ in range(2)
    ]
    passed, refused = [], []

    def attempt(worker: ProviderGuard) -> None:
        for _ in range(30):
            try:
                worker.acquire()
                passed.append(1)
            except RateLimited:
                refused.append(1)

    threads = [threading.Thread(target=attempt, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(passed), len(refused)) == (10, 50)


def test_a_waiting_caller_gets_a_slot_and_the_window_is_never_exceeded(redis_resource):
    workers = [
        guard(redis_resource, "smtp", rate="5/second", max_wait_seconds=30) for _ in range(2)
    ]
    started: list[float] = []
    lock = threading.Lock()

    def work(worker: ProviderGuard) -> None:
        for _ in range(8):
            worker.call(lambda: None)
            with lock:
                started.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(started) == 16  # every call got through, by waiting
    started.sort()
    # An upper bound only: a slower machine spreads calls out more, never less. The slack
    # is the time between Redis granting a slot and this thread noting it.
    densest = max(sum(1 for t in started if s <= t < s + 0.95) for s in started)
    assert densest <= 5


def test_the_rate_limit_holds_at_the_stripe_sandbox(redis_resource, stripe_resource):
    marker = f"guard-{uuid.uuid4().hex[:8]}"
    workers = [
        guard(redis_resource, "stripe", rate="6/minute", max_wait_seconds=0) for _ in range(2)
    ]
    client = stripe_resource.api().client()
    refused = 0
    for i in range(20):
        try:
            workers[i % 2].call(
                client.v1.customers.create,
                params={"email": f"{marker}-{i}@example.com", "metadata": {"marker": marker}},
            )
        except RateLimited:
            refused += 1

    made = [
        c
        for c in client.v1.customers.list(params={"limit": 100}).auto_paging_iter()
        if c.metadata is not None and c.metadata.to_dict().get("marker") == marker
    ]
    assert (len(made), refused) == (6, 14)


class Provider:
    """A provider that is down until told otherwise, counting the calls that reach it."""

    def __init__(self):
        self.calls = 0
        self.down = True

    def request(self):
        self.calls += 1
        if self.down:
            raise TransientError("HTTP 503 from provider")
        return "ok"


def test_breaker_opened_by_one_worker_stops_the_others(redis_resource):
    now = [1000.0]
    options = {"fail_max": 3, "reset_timeout": 60, "clock": lambda: now[0]}
    first, second = (
        guard(redis_resource, "stripe", **options),
        guard(redis_resource, "stripe", **options),
    )
    provider = Provider()

    for _ in range(3):
        with pytest.raises(TransientError, match="HTTP 503"):
            first.call(provider.request)
    assert provider.calls == 3

    with pytest.raises(CircuitOpen) as opened:
        second.call(provider.request)
    assert provider.calls == 3  # not called while open
    assert isinstance(opened.value, TransientError)  # the request's backoff retries it later
    assert opened.value.retry_in == pytest.approx(60)

    # After the timeout one caller probes; the others keep waiting for its outcome.
    now[0] += 61
    provider.down = False
    with first.guarded():
        with pytest.raises(CircuitOpen):
            second.call(provider.request)
        provider.request()
    assert second.call(provider.request) == "ok"  # closed again, for everyone
    assert first.breaker_state() == {}


def test_a_failed_probe_opens_the_breaker_again(redis_resource):
    now = [0.0]
    options = {"fail_max": 2, "reset_timeout": 30, "clock": lambda: now[0]}
    first, second = (
        guard(redis_resource, "webhook", **options),
        guard(redis_resource, "webhook", **options),
    )
    provider = Provider()
    for _ in range(2):
        with pytest.raises(TransientError):
            first.call(provider.request)
    now[0] += 31
    with pytest.raises(TransientError, match="HTTP 503"):
        second.call(provider.request)  # the probe
    with pytest.raises(CircuitOpen):
        first.call(provider.request)
    assert provider.calls == 3


def test_permanent_refusals_do_not_open_the_breaker(redis_resource):
    worker = guard(redis_resource, "stripe", fail_max=2, reset_timeout=60)

    def declined():
        raise PermanentError("card declined")

    for _ in range(5):
        with pytest.raises(PermanentError):
            worker.call(declined)
    assert worker.call(lambda: "ok") == "ok"


def test_a_breaker_set_to_zero_never_opens_and_keeps_no_state(redis_resource):
    worker = guard(redis_resource, "stripe", rate="off", fail_max=0)
    provider = Provider()
    for _ in range(10):
        with pytest.raises(TransientError, match="HTTP 503"):
            worker.call(provider.request)
    assert provider.calls == 10  # every call reached the provider
    assert worker.breaker_state() == {}
    provider.down = False
    assert worker.call(provider.request) == "ok"


def test_a_negative_breaker_setting_is_refused(redis_resource):
    with pytest.raises(ValueError, match="0 for no breaker"):
        guard(redis_resource, "stripe", fail_max=-1)


def test_a_clear_breaker_is_trusted_for_its_cache_window_and_a_failure_still_reported(
    redis_url, key_prefix
):
    """Found closed with nothing counted, the breaker is not asked again within the window:
    with Redis cut right after that, successful calls still go through, touching no Redis.
    A failure is reported (and, Redis being away, logged, never raised in its place); the
    next call asks Redis again, before anything is sent."""
    parts = urlsplit(redis_url)
    with TcpCut(parts.hostname, parts.port or 6379) as cut:
        client = redis.Redis(host="127.0.0.1", port=cut.port, db=int(parts.path[1:] or 0))
        worker = ProviderGuard(
            client, "stripe", keys=IntakeKeys(key_prefix), rate="off", cache_seconds=600
        )
        provider = Provider()
        provider.down = False
        assert worker.call(provider.request) == "ok"  # asked Redis: closed, no failures
        cut.cut()

        assert [worker.call(provider.request) for _ in range(5)] == ["ok"] * 5
        provider.down = True
        with pytest.raises(TransientError, match="HTTP 503"):  # the provider's own error
            worker.call(provider.request)
        with pytest.raises(GuardUnavailable) as refused:  # transient: nothing was sent
            worker.call(provider.request)
        assert isinstance(refused.value.__cause__, redis.ConnectionError)
    assert provider.calls == 7  # the last call was refused before it was sent
