"""Working through the requests of one micro-batch: each on its own, several at once.

Free of Dagster. Each request is handled by a function that does the whole of it (effect,
then notices) and is safe to call again: every effect goes through the effect ledger. A
transient failure retries that request alone, with exponential backoff and jitter
(`with_backoff`, the one retry loop inside a run: providers make one try per call); a
permanent one fails that request alone; an error nobody foresaw fails it too (a bug will not
fix itself on retry). The others go on.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis
import sqlalchemy.exc

from queue_pipelines.failures import ProviderError

SUCCEEDED = "succeeded"
FAILED = "failed"  # for good: dead-lettered with its reason
UNFINISHED = "unfinished"  # transient failures outlasted the retries: another run tries again

# Infrastructure hiccups worth retrying besides a provider's own transient errors: the
# ledger's database or Redis dropping a connection, a socket timing out.
TRANSIENT_INFRASTRUCTURE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Backoff:
    """Attempts per request, and the pauses between them: `first_delay` doubling, each
    within ±jitter of itself so that requests that failed together do not retry together."""

    attempts: int = 4
    first_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    # While a provider says when to come back (its circuit breaker is open), a request waits
    # for it without spending attempts, this long in all; then it is left unfinished.
    max_provider_wait: float = 300.0

    def delay(self, attempt: int) -> float:
        base = min(self.first_delay * 2 ** (attempt - 1), self.max_delay)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


# Per request of a batch, and per notice after an effect (notifications/notifier.py): four
# attempts, 0.5 s, 1 s, 2 s apart (± half). Past that a request waits for another run, which
# the intake sensor starts once this one has ended.
REQUEST_BACKOFF = Backoff(attempts=4, first_delay=0.5, max_delay=8.0, jitter=0.5)


@dataclass
class ItemResult:
    """What became of one request. `summary` is what a person reads in the run's table
    (provider ids, amounts, status); `error` the exception that failed it, if one did."""

    request_key: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    code: str = ""
    attempts: int = 0
    seconds: float = 0.0
    ended_at: float = field(default_factory=time.time)
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True)
class Item(Generic[RequestT]):
    request_key: str
    request: RequestT


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(reason, code) as a dead letter and the run's table show them."""
    if isinstance(exc, ProviderError):
        return exc.reason, exc.code or ""
    return f"unexpected {type(exc).__name__}: {exc}", "unexpected"


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return not exc.permanent
    return isinstance(exc, TRANSIENT_INFRASTRUCTURE_ERRORS)


@dataclass(frozen=True)
class Tried(Generic[ResultT]):
    """What `with_backoff` came to: the call's value, or the error it ended with."""

    value: ResultT | None
    error: Exception | None
    attempts: int


def with_backoff(
    call: Callable[[], ResultT], backoff: Backoff, sleep: Callable[[float], None] = time.sleep
) -> Tried[ResultT]:
    """The one retry loop inside a run. Providers make one classified try per call; this
    calls again on a transient failure, `backoff.attempts` times in all, and waits without
    spending an attempt while the provider says when to come back (an open breaker)."""
    attempt, provider_wait = 1, 0.0
    while True:
        try:
            return Tried(call(), None, attempt)
        except Exception as exc:
            transient = is_transient(exc)
            retry_after = getattr(exc, "retry_after", None) if transient else None
            if retry_after is not None and provider_wait + retry_after <= backoff.max_provider_wait:
                # The provider is down for everyone: wait for it, spread out so that the
                # waiting requests do not all come back at once.
                pause = retry_after * (1 + random.uniform(0, backoff.jitter))
                sleep(pause)
                provider_wait += pause
                continue
            if transient and attempt < backoff.attempts:
                sleep(backoff.delay(attempt))
                attempt += 1
                continue
            return Tried(None, exc, attempt)


def handle_one(
    item: Item[RequestT],
    handle: Callable[[RequestT], dict[str, Any]],
    backoff: Backoff,
    sleep: Callable[[float], None] = time.sleep,
) -> ItemResult:
    started = time.monotonic()
    tried = with_backoff(lambda: handle(item.request), backoff, sleep)
    seconds = time.monotonic() - started
    if tried.error is None:
        return ItemResult(
            item.request_key,
            SUCCEEDED,
            summary=tried.value,
            attempts=tried.attempts,
            seconds=seconds,
        )
    reason, code = describe_error(tried.error)
    return ItemResult(
        item.request_key,
        UNFINISHED if is_transient(tried.error) else FAILED,
        reason=reason,
        code=code,
        attempts=tried.attempts,
        seconds=seconds,
        error=tried.error,
    )


def process_items(
    items: Sequence[Item[RequestT]],
    handle: Callable[[RequestT], dict[str, Any]],
    *,
    concurrency: int,
    backoff: Backoff,
    on_result: Callable[[ItemResult], None] = lambda _result: None,
    on_progress: Callable[[int, int], None] = lambda _done, _total: None,
    turns_of: Callable[[RequestT], Iterable[Hashable]] | None = None,
) -> list[ItemResult]:
    """Handle every item, `concurrency` at a time; `on_result` runs for each as it ends (in
    the worker thread: settle it there, so a later crash cannot undo it). Results come back
    in the items' order.

    Items that share a key of `turns_of(request)` (one ticket's transfers; a customer's
    changes and those of the e-mail an update moves it to) take turns: one after
    another in the items' order, each after the one before has ended, retries included. One
    left unfinished holds back those after it, unfinished and untried, so that none overtakes
    it; one that failed for good does not (the next finds the state it left). Items of
    different turns run concurrently as usual."""
    done = 0
    lock = threading.Lock()

    def finish(result: ItemResult) -> ItemResult:
        nonlocal done
        on_result(result)
        with lock:
            done += 1
            on_progress(done, len(items))
        return result

    def work_in_turn(lane: list[int]) -> list[ItemResult]:
        results: list[ItemResult] = []
        ahead: ItemResult | None = None
        for index in lane:
            item = items[index]
            if ahead is None:
                result = handle_one(item, handle, backoff)
                if result.status == UNFINISHED:
                    ahead = result
            else:
                result = ItemResult(
                    item.request_key,
                    UNFINISHED,
                    reason=f"waits for its turn after {ahead.request_key}, which did not "
                    f"finish ({ahead.reason})",
                    code="waiting_turn",
                )
            results.append(finish(result))
        return results

    lanes = (
        [[index] for index in range(len(items))]
        if turns_of is None
        else _lanes([turns_of(item.request) for item in items])
    )
    if concurrency <= 1 or len(lanes) <= 1:
        ended = [work_in_turn(lane) for lane in lanes]
    else:
        # Each lane runs in a copy of the caller's context, so what the caller scoped with a
        # context variable (the run's tally of provider calls) follows it into the threads.
        contexts = [contextvars.copy_context() for _ in lanes]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(lanes))) as pool:
            ended = list(pool.map(lambda ctx, lane: ctx.run(work_in_turn, lane), contexts, lanes))
    results: list[ItemResult | None] = [None] * len(items)
    for lane, lane_results in zip(lanes, ended, strict=True):
        for index, result in zip(lane, lane_results, strict=True):
            results[index] = result
    return results  # type: ignore[return-value]


def _lanes(keys_of_items: list[Iterable[Hashable]]) -> list[list[int]]:
    """The items' indexes grouped so that items sharing a key, directly or through others,
    are in one lane, each lane in the items' order."""
    lane_of: list[int] = list(range(len(keys_of_items)))  # union-find over the items

    def root(index: int) -> int:
        while lane_of[index] != index:
            lane_of[index] = lane_of[lane_of[index]]
            index = lane_of[index]
        return index

    first_with: dict[Hashable, int] = {}
    for index, keys in enumerate(keys_of_items):
        for key in keys:
            other = first_with.setdefault(key, index)
            low, high = sorted((root(index), root(other)))
            lane_of[high] = low
    lanes: dict[int, list[int]] = {}
    for index in range(len(keys_of_items)):
        lanes.setdefault(root(index), []).append(index)
    return list(lanes.values())


def count_by_status(results: Iterable[ItemResult]) -> dict[str, int]:
    counts = {SUCCEEDED: 0, FAILED: 0, UNFINISHED: 0}
    for result in results:
        counts[result.status] += 1
    return counts
