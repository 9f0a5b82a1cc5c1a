"""Provider limits shared by every run worker: a request-rate limit and a circuit breaker per
provider, both kept in Redis so that all processes (runs, pods) count against one budget.

    guard = ProviderGuard(redis_client, "stripe", keys=IntakeKeys("qp"), rate="25/second")
    intent = guard.call(stripe_api.create_payment_intent, ...)

- **Rate**: a moving window in Redis, from the `limits` library (`MovingWindowRateLimiter` over
  its `RedisStorage`): at most N calls in any window of the given length, across every
  worker. A call waits for a slot, up to `max_wait_seconds`; past that it raises
  `RateLimited`, a `TransientError`, so the request's backoff waits and tries again.
  `rate="off"` keeps the breaker and drops the limit.
- **Breaker**: after `fail_max` consecutive transient failures (network, timeouts, 429, 5xx:
  `ProviderError(permanent=False)` or an OSError) the breaker opens for `reset_timeout`
  seconds; meanwhile every guard of that provider, in any process, raises `CircuitOpen` (a
  `TransientError`) without calling, so runs wait instead of burning their retries against a
  provider that is down. Then one call is let through (half-open): success closes the
  breaker, failure opens it again. A permanent error (declined card) says nothing about the
  provider's health and does not count. `fail_max=0` turns the breaker off (the rate limit
  stays): no call is refused and Redis is not asked. A guard that found the breaker closed
  with no failure counted trusts that for `cache_seconds` (1 s): its calls in that window ask
  Redis nothing before or after (a success has nothing to reset), so a healthy provider costs
  no round trip per call; a failure is always reported, and another worker's trip is seen
  within that second.

Why not `pybreaker`'s CircuitRedisStorage: it shares state, but `CircuitBreaker.call` holds
an instance lock for the whole call, which would serialize the concurrent provider calls of
one run worker, and it needs a client that does not decode replies. The breaker here is one
small Lua script per transition, atomic in Redis.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from queue_pipelines.failures import ProviderError, TransientError

T = TypeVar("T")
log = logging.getLogger("queue_pipelines.providers.guard")

# Stripe's documented limits: 25 read+write requests/s in test mode, 100/s live.
DEFAULT_RATES = {"stripe": "25/second", "stripe_live": "100/second"}
OFF = "off"  # no rate limit: the breaker alone


def check_rate(rate: str) -> str:
    """`rate` itself when it is "off" or a limit of at least one call ("25/second",
    "6/minute", as the `limits` library writes them); else ValueError saying why."""
    if rate == OFF:
        return rate
    try:
        item = parse(rate)
    except ValueError as exc:
        raise ValueError(
            f"rate {rate!r}: write it as N/second, N/minute ... (e.g. 25/second), or {OFF!r}"
        ) from exc
    if item.amount < 1:
        raise ValueError(f"rate {rate!r} lets no call through; use {OFF!r} for no limit")
    return rate


class RateLimited(TransientError):
    def __init__(self, provider: str, rate: str, waited: float):
        super().__init__(
            f"{provider}: no request slot within {waited:.1f} s (limit {rate}, shared by every "
            "worker); retrying later",
            code="rate_limited",
        )


class GuardUnavailable(TransientError):
    """The guard could not reach its Redis before the call: nothing was sent. Not a failure
    of the provider (the breaker is not told), and not an effect in doubt: a sender's claim
    for it is released, and the request's backoff tries again."""

    def __init__(self, provider: str, exc: BaseException):
        super().__init__(
            f"{provider}: the call was not made: its rate limit and circuit breaker live in "
            f"Redis, which did not answer ({type(exc).__name__}: {exc}); retrying later",
            code="guard_unavailable",
        )


class CircuitOpen(TransientError):
    def __init__(self, provider: str, retry_in: float):
        super().__init__(
            f"{provider} looks down (circuit breaker open after repeated failures); "
            f"next attempt allowed in {max(retry_in, 0):.0f} s",
            code="circuit_open",
            retry_after=max(retry_in, 0.1),
        )
        self.retry_in = retry_in


# KEYS[1] breaker hash. ARGV: now (s), fail_max, reset_timeout (s).
# Returns {state, seconds until a call is allowed, failures counted (closed only)}; state
# 'closed', 'open' or 'probe' (this caller holds the one half-open call).
_BEFORE_CALL = """
local opened_until = tonumber(redis.call('HGET', KEYS[1], 'opened_until') or '0')
if opened_until == 0 then
  return {'closed', '0', redis.call('HGET', KEYS[1], 'failures') or '0'}
end
local now = tonumber(ARGV[1])
if now < opened_until then return {'open', tostring(opened_until - now)} end
-- Half-open: the first caller after the timeout probes; the others wait for its outcome.
if redis.call('HSETNX', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[3]))) == 1 then
  return {'probe', '0'}
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
if now >= probe_until then
  -- The probe's caller died without reporting: let this one probe instead.
  redis.call('HSET', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[3])))
  return {'probe', '0'}
end
return {'open', tostring(probe_until - now)}
"""

# KEYS[1] breaker hash. ARGV: now, fail_max, reset_timeout, outcome ('ok' or 'fail').
_AFTER_CALL = """
if ARGV[4] == 'ok' then
  redis.call('DEL', KEYS[1])
  return 0
end
local now = tonumber(ARGV[1])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened_until = tonumber(redis.call('HGET', KEYS[1], 'opened_until') or '0')
if failures >= tonumber(ARGV[2]) or opened_until > 0 then
  -- Tripped, or a half-open probe failed: open (again) for reset_timeout.
  redis.call('HSET', KEYS[1], 'opened_until', tostring(now + tonumber(ARGV[3])))
  redis.call('HDEL', KEYS[1], 'probe_until')
  redis.call('HINCRBY', KEYS[1], 'times_opened', 1)
  return 1
end
return 0
"""


def counts_against_provider(exc: BaseException) -> bool:
    """A failure that says the provider is unwell (not that the request was bad)."""
    if isinstance(exc, ProviderError):
        return not exc.permanent
    return isinstance(exc, (OSError, TimeoutError))


class GuardKeys(Protocol):
    """Where guards keep their state: queue_pipelines.intake.keys.IntakeKeys spells every key
    of the project (handed in from above, as providers import nothing of the intake)."""

    @property
    def rate_limits(self) -> str: ...

    def breaker(self, provider: str) -> str: ...


class ProviderGuard:
    """Rate limit and circuit breaker of one provider, shared through Redis."""

    def __init__(
        self,
        client: redis.Redis,
        provider: str,
        *,
        rate: str | None = None,
        max_wait_seconds: float = 30.0,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        keys: GuardKeys,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        cache_seconds: float = 1.0,
    ):
        if fail_max < 0:
            raise ValueError(f"fail_max {fail_max}: 1 or more, or 0 for no breaker")
        self.provider = provider
        self.rate = check_rate(rate or DEFAULT_RATES.get(provider, "50/second"))
        self.max_wait_seconds = max_wait_seconds
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.sleep = sleep
        self.cache_seconds = cache_seconds
        self._clear_until = 0.0
        self._lock = threading.Lock()
        self._item = None if self.rate == OFF else parse(self.rate)
        self._limiter = MovingWindowRateLimiter(
            RedisStorage(
                "redis://",
                connection_pool=client.connection_pool,
                key_prefix=keys.rate_limits,
            )
        )
        self._breaker_key = keys.breaker(provider)
        self._before = client.register_script(_BEFORE_CALL)
        self._after = client.register_script(_AFTER_CALL)
        self.client = client

    # rate
    def acquire(self) -> float:
        """Wait for a request slot; returns the seconds waited. Raises RateLimited past
        max_wait_seconds."""
        if self._item is None:
            return 0.0
        started = self.clock()
        while not self._limiter.hit(self._item, self.provider):
            waited = self.clock() - started
            if waited >= self.max_wait_seconds:
                raise RateLimited(self.provider, self.rate, waited)
            reset_at, _remaining = self._limiter.get_window_stats(self._item, self.provider)
            pause = min(max(reset_at - time.time(), 0.005), 0.25)
            self.sleep(min(pause, max(self.max_wait_seconds - waited, 0.005)))
        return self.clock() - started

    # breaker
    def breaker_state(self) -> dict[str, str]:
        return self.client.hgetall(self._breaker_key)

    def _known_clear(self) -> bool:
        """Whether this guard saw the breaker closed with no failure counted within the last
        `cache_seconds`: then a call needs no round trip to Redis before it, and a success
        none after it (there is nothing to reset)."""
        with self._lock:
            return time.monotonic() < self._clear_until

    def _note_clear(self, clear: bool) -> None:
        with self._lock:
            self._clear_until = time.monotonic() + self.cache_seconds if clear else 0.0

    def _check_breaker(self) -> bool:
        if self._known_clear():
            return False
        state, retry_in, *failures = self._before(
            keys=[self._breaker_key],
            args=[self.clock(), self.fail_max, self.reset_timeout],
        )
        state = state.decode() if isinstance(state, bytes) else state
        if state == "open":
            raise CircuitOpen(self.provider, float(retry_in))
        self._note_clear(state == "closed" and int(failures[0] if failures else 0) == 0)
        return state == "probe"

    def _report(self, ok: bool) -> None:
        """Tell the breaker how a call went. Only bookkeeping: the provider has answered by
        now, so a Redis that is away must not turn that answer into a failure (a charge that
        went through, retried as failed, charges twice). It is logged instead."""
        if ok and self._known_clear():
            return
        self._note_clear(False)
        try:
            self._after(
                keys=[self._breaker_key],
                args=[self.clock(), self.fail_max, self.reset_timeout, "ok" if ok else "fail"],
            )
        except redis.RedisError as exc:
            log.warning(
                "%s: the circuit breaker could not note a call's outcome (%s): %s; the call's "
                "own outcome stands",
                self.provider,
                "ok" if ok else "failed",
                exc,
            )
            return
        self._note_clear(ok)

    @property
    def breaker_on(self) -> bool:
        return self.fail_max > 0

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """`with guard.guarded(): provider_call()` — breaker first (an open breaker does not
        spend a rate slot), then a rate slot, then the call; its outcome feeds the breaker."""
        try:
            if self.breaker_on:
                self._check_breaker()
            self.acquire()
        except (redis.RedisError, OSError) as exc:
            raise GuardUnavailable(self.provider, exc) from exc
        if not self.breaker_on:
            yield
            return
        try:
            yield
        except RateLimited:
            raise  # no slot, so nothing was sent: it says nothing of the provider
        except BaseException as exc:
            if counts_against_provider(exc):
                self._report(ok=False)
            elif isinstance(exc, ProviderError):
                # A permanent refusal is an answer: the provider is up.
                self._report(ok=True)
            raise
        else:
            self._report(ok=True)

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        with self.guarded():
            return fn(*args, **kwargs)
