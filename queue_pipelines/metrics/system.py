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


def resident_memory_bytes() -> int:
    """RSS now (/proc/self/statm); where /proc is missing, the peak RSS getrusage knows."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class SystemSample:
    memory_usage_bytes: int
    cpu_usage_percent: float  # of one core, since the previous sample (or process start)
    cpu_seconds: float
    uptime_seconds: float
    threads: int
    pid: int

    def as_dict(self) -> dict:
        return {
            "memory_usage_bytes": self.memory_usage_bytes,
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
            memory_usage_bytes=resident_memory_bytes(),
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
        yield GaugeMetricFamily(
            "service_memory_usage_bytes",
            "Resident memory of this process.",
            value=sample.memory_usage_bytes,
        )
        yield GaugeMetricFamily(
            "service_cpu_usage_percent",
            "CPU use of this process since the previous scrape, percent of one core.",
            value=sample.cpu_usage_percent,
        )
