"""The provider guard's circuit breaker and rate limit without a server: its own Lua scripts
on the in-memory intake's Redis (fakeredis), with the test's clock, so the breaker's states
(closed, open, the one half-open probe) and the rate's waits are stepped through exactly.
Several workers are several guards on the same Redis."""

from __future__ import annotations

import pytest

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.providers.guard import (
    OFF,
    CircuitOpen,
    ProviderGuard,
    RateLimited,
    check_rate,
    counts_against_provider,
)
from tests.support.memory_intake import MemoryIntake


def guard(intake: MemoryIntake, **options) -> ProviderGuard:
    options = {"rate": OFF, "fail_max": 2, "reset_timeout": 30.0, **options}
    return ProviderGuard(
        intake.client,
        "stripe",
        keys=intake.keys,
        clock=lambda: intake.clock,
        sleep=intake.advance,
        cache_seconds=0,
        **options,
    )


class Provider:
    """A provider call that answers, or raises what it is told to, and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, error: BaseException | None = None) -> str:
        self.calls += 1
        if error is not None:
            raise error
        return "answer"


def down() -> TransientError:
    return TransientError("503 from the provider")


def trip(breaker: ProviderGuard, provider: Provider) -> None:
    """Fail fail_max (2) calls in a row: the breaker opens."""
    for _ in range(2):
        with pytest.raises(TransientError):
            breaker.call(provider, down())


def test_rates_are_checked_when_the_guard_is_made():
    assert check_rate(OFF) == OFF
    assert check_rate("6/minute") == "6/minute"
    with pytest.raises(ValueError, match="N/second"):
        check_rate("fast")
    with pytest.raises(ValueError, match="lets no call through"):
        check_rate("0/second")


def test_only_failures_that_say_the_provider_is_unwell_count():
    assert counts_against_provider(down())
    assert counts_against_provider(ConnectionResetError())
    assert not counts_against_provider(PermanentError("card declined"))
    assert not counts_against_provider(KeyError("a bug of ours"))


def test_the_breaker_opens_for_every_worker_after_fail_max_transient_failures(intake):
    one, other, provider = guard(intake), guard(intake), Provider()
    trip(one, provider)

    with pytest.raises(CircuitOpen) as caught:
        other.call(provider)
    assert provider.calls == 2  # refused without calling
    assert caught.value.retry_in == 30.0 and caught.value.code == "circuit_open"
    intake.advance(20)
    with pytest.raises(CircuitOpen) as caught:
        one.call(provider)
    assert caught.value.retry_in == 10.0


def test_after_the_timeout_one_probe_goes_and_its_success_closes_the_breaker(intake):
    one, other, provider = guard(intake), guard(intake), Provider()
    trip(one, provider)
    intake.advance(30)

    # While the probe is out, everyone else waits for its outcome.
    with one.guarded(), pytest.raises(CircuitOpen):
        other.call(provider)
    assert one.breaker_state() == {}
    assert other.call(provider) == "answer"


def test_a_failed_probe_opens_the_breaker_again(intake):
    one, provider = guard(intake), Provider()
    trip(one, provider)
    intake.advance(30)

    with pytest.raises(TransientError):
        one.call(provider, down())
    assert one.breaker_state()["times_opened"] == "2"
    with pytest.raises(CircuitOpen):
        one.call(provider)


def test_a_probe_whose_worker_died_is_taken_over_after_the_timeout(intake):
    one, other, provider = guard(intake), guard(intake), Provider()
    trip(one, provider)
    intake.advance(30)
    assert one._check_breaker()  # the probe, never reported: its worker died

    intake.advance(29)
    with pytest.raises(CircuitOpen):
        other.call(provider)
    intake.advance(1)
    assert other.call(provider) == "answer"
    assert other.breaker_state() == {}


def test_a_permanent_refusal_is_an_answer_and_resets_the_count(intake):
    one, provider = guard(intake), Provider()
    with pytest.raises(TransientError):
        one.call(provider, down())
    with pytest.raises(PermanentError):
        one.call(provider, PermanentError("card declined"))
    with pytest.raises(TransientError):
        one.call(provider, down())

    assert one.call(provider) == "answer"  # one failure in a row: still closed


def test_no_breaker_keeps_no_state_and_refuses_nothing(intake):
    one, provider = guard(intake, fail_max=0), Provider()
    for _ in range(5):
        with pytest.raises(TransientError):
            one.call(provider, down())

    assert one.call(provider) == "answer"
    assert one.breaker_state() == {} and not one.breaker_on
    with pytest.raises(ValueError, match="fail_max"):
        guard(intake, fail_max=-1)


def test_a_call_waits_for_a_rate_slot_shared_by_every_worker(intake):
    one, other, provider = (
        guard(intake, rate="2/second"),
        guard(intake, rate="2/second"),
        Provider(),
    )
    one.call(provider)
    other.call(provider)
    started = intake.clock

    assert one.call(provider) == "answer"
    # On the test's clock: until the window of the first two calls has moved on, give or take
    # one of its pauses (at most 0.25 s).
    assert 1.0 <= intake.clock - started <= 1.25


def test_no_slot_within_the_wait_raises_rate_limited_and_the_breaker_stays_closed(intake):
    one, provider = guard(intake, rate="1/minute", max_wait_seconds=2.0), Provider()
    one.call(provider)

    with pytest.raises(RateLimited):
        one.call(provider)
    assert provider.calls == 1
    assert one.breaker_state() == {}


def test_a_redis_away_before_the_call_sends_nothing_and_says_so(intake: MemoryIntake):
    """Redis gone before the call (the breaker's check, the rate slot): the provider is not
    called, and the error is a transient one of the guard's own, so an e-mail's claim is
    released (nothing was sent) rather than left in doubt."""
    import fakeredis

    from queue_pipelines.providers.guard import GuardUnavailable

    server = fakeredis.FakeServer()
    provider = Provider()
    for options in ({"fail_max": 2, "rate": OFF}, {"fail_max": 0, "rate": "100/second"}):
        breaker = ProviderGuard(
            fakeredis.FakeRedis(server=server), "stripe", keys=intake.keys, cache_seconds=0,
            reset_timeout=30.0, **options,
        )  # fmt: skip
        server.connected = False
        with pytest.raises(GuardUnavailable) as raised:
            breaker.call(provider)
        assert isinstance(raised.value, TransientError) and provider.calls == 0
        server.connected = True
        assert breaker.call(provider) == "answer" and provider.calls == 1
        provider.calls = 0
