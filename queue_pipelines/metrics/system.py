"""The process's own footprint, as the original service reported it: resident memory and CPU
use, as gauges (`service_memory_usage_bytes`, `service_cpu_usage_percent`) and as
GET /metrics/system. Read from /proc and the OS at scrape time; no sampling thread."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_bytes() -> dict[str, int]:
    """This process's memory by type, as the original service labelled it: `rss` (resident
    now), `virtual` (address space) from /proc/self/statm, `peak_rss` from getrusage. Where
    /proc is missing, rss is the peak."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with open("/proc/self/statm") as handle:
            size, resident = (int(pages) * _PAGE_SIZE for pages in handle.read().split()[:2])
    except (OSError, ValueError):
        return {"rss": peak, "peak_rss": peak}
    return {"rss": resident, "virtual": size, "peak_rss": peak}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class SystemSample:
    memory: dict[str, int]  # bytes by type: rss, virtual, peak_rss
    cpu_usage_percent: float  # of one core, since the previous sample (or process start)
    cpu_seconds: float
    uptime_seconds: float
    threads: int
    pid: int

    @property
    def memory_usage_bytes(self) -> int:
        return self.memory["rss"]

    def as_dict(self) -> dict:
        return {
            "memory_usage_bytes": self.memory_usage_bytes,
            "memory_bytes": dict(self.memory),
            "cpu_usage_percent": round(self.cpu_usage_percent, 2),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "uptime_seconds": round(self.uptime_seconds, 3),
            "threads": self.threads,
            "pid": self.pid,
        }


class SystemUsage:
    """CPU percent is CPU time over wall time between two reads, as `top` shows it."""

    def __init__(self):
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._last = (self._started, cpu_seconds())

    def sample(self) -> SystemSample:
        now, cpu = time.monotonic(), cpu_seconds()
        with self._lock:
            then, cpu_then = self._last
            self._last = (now, cpu)
        elapsed = now - then
        percent = 100.0 * (cpu - cpu_then) / elapsed if elapsed > 0 else 0.0
        return SystemSample(
            memory=memory_bytes(),
            cpu_usage_percent=max(percent, 0.0),
            cpu_seconds=cpu,
            uptime_seconds=now - self._started,
            threads=threading.active_count(),
            pid=os.getpid(),
        )


class SystemCollector:
    """The two gauges, for a prometheus_client registry."""

    def __init__(self, usage: SystemUsage):
        self.usage = usage

    def describe(self):
        return []

    def collect(self):
        sample = self.usage.sample()
        memory = GaugeMetricFamily(
            "service_memory_usage_bytes",
            "Memory of this process in bytes, by type (rss, virtual, peak_rss).",
            labels=["type"],
        )
        for kind, value in sorted(sample.memory.items()):
            memory.add_metric([kind], value)
        yield memory
        yield GaugeMetricFamily(
            "service_cpu_usage_percent",
            "CPU use of this process since the previous scrape, percent of one core.",
            value=sample.cpu_usage_percent,
        )
