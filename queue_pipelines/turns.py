"""One at a time, across every run and worker: a Redis lock per object that two requests may
act on at once (the refunds of one PaymentIntent, the transfers of one ticket), held while a
request checks and acts.

Releasing is bookkeeping after the effect: a lock that expired meanwhile, or a Redis that went
away, is logged, never raised, so that it cannot turn an effect that happened (and was
recorded) into a failure or a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from queue_pipelines.failures import TransientError

log = logging.getLogger("queue_pipelines.turns")


@dataclass(frozen=True)
class Turns:
    """`what` names the action in messages ("refund of", "transfer of ticket"); `code` is the
    transient failure's when the turn does not come within `wait_seconds` (it is tried again).
    `seconds` bounds how long a holder keeps the turn should it die holding it."""

    client: redis.Redis
    key_of: Callable[[str], str]
    what: str
    code: str
    seconds: float = 120
    wait_seconds: float = 30

    @contextmanager
    def holding(self, name: str) -> Iterator[None]:
        lock = self.client.lock(
            self.key_of(name), timeout=self.seconds, blocking_timeout=self.wait_seconds
        )
        if not lock.acquire():
            raise TransientError(f"another {self.what} {name} is still going", code=self.code)
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.RedisError as exc:
                log.warning("releasing the turn of %s %s failed: %s", self.what, name, exc)
