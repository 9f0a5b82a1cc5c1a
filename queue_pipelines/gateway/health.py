"""Kubernetes probes. Liveness says only that the process answers; readiness and start-up say
whether the dependencies a request needs answer now, each by name."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import dagster as dg
import redis

CHECK_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class DependencyState:
    name: str
    ok: bool
    detail: str
    seconds: float

    def as_dict(self) -> dict:
        return {
            "status": "up" if self.ok else "down",
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
        }


class HealthChecks:
    def __init__(self, client: redis.Redis, instance: dg.DagsterInstance):
        self.client = client
        self.instance = instance
        self.started_once = False
        # A hung dependency must not hang the probe: each check runs with a deadline.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")

    def _redis(self) -> str:
        self.client.ping()
        return "PING answered"

    def _dagster_storage(self) -> str:
        self.instance.get_runs(limit=1)
        return "run storage answered"

    def _check(self, name: str, fn) -> DependencyState:
        started = time.monotonic()
        future = self._pool.submit(fn)
        try:
            detail, ok = future.result(timeout=CHECK_TIMEOUT_SECONDS), True
        except FutureTimeout:
            detail, ok = f"no answer within {CHECK_TIMEOUT_SECONDS:.0f} s", False
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its words
            detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", False
        return DependencyState(name, ok, detail, time.monotonic() - started)

    def ready(self) -> tuple[bool, dict]:
        states = [
            self._check("redis", self._redis),
            self._check("dagster_storage", self._dagster_storage),
        ]
        ok = all(s.ok for s in states)
        if ok:
            self.started_once = True
        return ok, {
            "status": "ready" if ok else "not_ready",
            "dependencies": {s.name: s.as_dict() for s in states},
        }

    def startup(self, metrics_warm: bool = True) -> tuple[bool, dict]:
        """Passes once the dependencies answered one time and the metrics have read the run
        history; then it stays passed, so a later outage shows on readiness (traffic drained)
        without a restart loop."""
        if self.started_once and metrics_warm:
            return True, {"status": "started", "dependencies": {}, "metrics_warm": True}
        ok, body = self.ready()
        ok = ok and metrics_warm
        body["status"] = "started" if ok else "starting"
        body["metrics_warm"] = metrics_warm
        return ok, body

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
