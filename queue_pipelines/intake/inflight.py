"""Batches in flight: recorded before their run is requested, forgotten once the run has
ended and each request in it is settled or batched again (settling.py says when).

A request is in at most one batch at a time: its assignment names the batch and the
attempt (how many runs have had it), so a tick that fails after recording a batch requests
the same run again instead of batching the requests anew."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from queue_pipelines.intake.keys import IntakeKeys


@dataclass(frozen=True)
class Assignment:
    batch_key: str
    attempt: int


class InflightBatches:
    def __init__(self, client: redis.Redis, keys: IntakeKeys):
        self.client = client
        self.keys = keys

    def assign(self, job_type: str, batch_key: str, batch: dict, attempts: dict[str, int]) -> None:
        """Record `batch` and put its requests in flight in it (`attempts`: request key ->
        attempt), all at once."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.batch(batch_key), json.dumps(batch))
        pipe.sadd(self.keys.inflight(job_type), batch_key)
        for request_key, attempt in attempts.items():
            pipe.hset(
                self.keys.assigned(request_key),
                mapping={"batch": batch_key, "attempt": attempt},
            )
        pipe.execute()

    def batch_keys(self, job_type: str) -> list[str]:
        return sorted(self.client.smembers(self.keys.inflight(job_type)))

    def batch(self, batch_key: str) -> dict | None:
        raw = self.client.get(self.keys.batch(batch_key))
        return json.loads(raw) if raw else None

    def finish(self, job_type: str, batch_key: str, request_keys: Sequence[str]) -> None:
        """Forget the batch, and the assignments of its requests that are still to it (not
        those assigned to a newer batch meanwhile)."""
        pipe = self.client.pipeline(transaction=True)
        for request_key in request_keys:
            pipe.hget(self.keys.assigned(request_key), "batch")
        current = pipe.execute()
        pipe = self.client.pipeline(transaction=True)
        for request_key, assigned_to in zip(request_keys, current, strict=True):
            if assigned_to == batch_key:
                pipe.delete(self.keys.assigned(request_key))
        pipe.delete(self.keys.batch(batch_key))
        pipe.srem(self.keys.inflight(job_type), batch_key)
        pipe.execute()

    def assignments(self, request_keys: Sequence[str]) -> dict[str, Assignment]:
        pipe = self.client.pipeline(transaction=False)
        for request_key in request_keys:
            pipe.hgetall(self.keys.assigned(request_key))
        return {
            request_key: Assignment(found["batch"], int(found["attempt"]))
            for request_key, found in zip(request_keys, pipe.execute(), strict=True)
            if found
        }
