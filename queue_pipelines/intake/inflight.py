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
from queue_pipelines.intake.scripts import IntakeScripts, read_fields


@dataclass(frozen=True)
class Assignment:
    batch_key: str
    attempt: int


class InflightBatches:
    def __init__(self, client: redis.Redis, keys: IntakeKeys, scripts: IntakeScripts):
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def assign(self, job_type: str, batch_key: str, batch: dict, attempts: dict[str, int]) -> None:
        """Record `batch` and put its requests in flight in it (`attempts`: request key ->
        attempt), all at once (assign_batch.lua: one command for the batch)."""
        self.scripts.assign_batch(
            keys=[
                self.keys.batch(batch_key),
                self.keys.inflight(job_type),
                *(self.keys.assigned(request_key) for request_key in attempts),
            ],
            args=[json.dumps(batch), batch_key, *attempts.values()],
        )

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
        found = read_fields(
            self.client,
            self.scripts,
            [self.keys.assigned(key) for key in request_keys],
            ("batch", "attempt"),
        )
        return {
            request_key: Assignment(batch, int(attempt))
            for request_key, (batch, attempt) in zip(request_keys, found, strict=True)
            if batch is not None
        }
