"""The intake streams themselves: one Redis stream per job type, each entry one request, read
through one consumer group whose pending list holds what was delivered and not yet settled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from queue_pipelines.intake.keys import IntakeKeys

GROUP = "queue-pipelines"
CONSUMER = "dagster-sensor"
ENVELOPE_FIELD = "envelope"
# Stream entries one XRANGE call returns while scanning a stream.
SCAN_PAGE = 1000


@dataclass(frozen=True)
class IntakeEntry:
    """One stream entry as read: its id and raw fields (not yet validated)."""

    job_type: str
    entry_id: str
    fields: dict[str, str]

    @property
    def raw_envelope(self) -> str | None:
        return self.fields.get(ENVELOPE_FIELD)


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id ('<ms>-<seq>'): numeric, as Redis orders them."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def entry_time(entry_id: str) -> float:
    """When Redis added the entry (unix seconds), from its id."""
    return entry_id_key(entry_id)[0] / 1000


class EntryStreams:
    """XADD, XREADGROUP, XAUTOCLAIM and friends on the intake streams."""

    def __init__(self, client: redis.Redis, keys: IntakeKeys):
        self.client = client
        self.keys = keys
        self._groups_ready: set[str] = set()

    def ensure_group(self, job_type: str) -> None:
        if job_type in self._groups_ready:
            return
        try:
            self.client.xgroup_create(self.keys.stream(job_type), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(job_type)

    def add(self, job_type_and_wire: Sequence[tuple[str, str]]) -> list[str]:
        """Append envelopes (job type, wire form) to their streams; returns the entry ids."""
        for job_type in {job_type for job_type, _ in job_type_and_wire}:
            self.ensure_group(job_type)
        pipe = self.client.pipeline(transaction=False)
        for job_type, wire in job_type_and_wire:
            pipe.xadd(self.keys.stream(job_type), {ENVELOPE_FIELD: wire})
        return list(pipe.execute())

    def read(self, job_type: str, after_id: str, count: int) -> list[IntakeEntry]:
        """Entries delivered to this consumer after `after_id` that are still pending (a tick
        that failed left them there), then never-delivered entries, `count` at most."""
        self.ensure_group(job_type)
        key = self.keys.stream(job_type)
        entries = self._live_entries(
            job_type, self.client.xreadgroup(GROUP, CONSUMER, {key: after_id}, count=count)
        )
        if len(entries) < count:
            entries += self._live_entries(
                job_type,
                self.client.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=count - len(entries)),
            )
        return entries

    def wait_for_new(self, job_type: str, timeout_seconds: float) -> bool:
        """Wait up to `timeout_seconds` for an entry never delivered to the consumer group;
        True once there is one. A blocking XREAD from the group's last-delivered id: it
        delivers nothing, so the next `read` still gets the entry."""
        self.ensure_group(job_type)
        key = self.keys.stream(job_type)
        last = next(
            (g["last-delivered-id"] for g in self.client.xinfo_groups(key) if g["name"] == GROUP),
            "0-0",
        )
        block_ms = max(1, int(timeout_seconds * 1000))
        return bool(self.client.xread({key: last}, count=1, block=block_ms))

    def reclaim(
        self, job_type: str, min_idle_seconds: float, start_id: str, count: int
    ) -> tuple[str, list[IntakeEntry]]:
        """Claim pending entries idle for `min_idle_seconds` or more, scanning from `start_id`.
        Returns the id to continue from ('0-0' once the whole pending list was scanned)."""
        self.ensure_group(job_type)
        key = self.keys.stream(job_type)
        reply = self.client.xautoclaim(
            key, GROUP, CONSUMER, int(min_idle_seconds * 1000), start_id=start_id, count=count
        )
        # Redis 7 drops pending entries that were deleted from the stream and lists their ids
        # in reply[2]; Redis 6.2 returns each as a nil entry with no id at all.
        claimed = [item for item in reply[1] if item is not None and item[0] is not None]
        return reply[0], self._live_entries(job_type, [(key, claimed)])

    def _live_entries(self, job_type: str, reply) -> list[IntakeEntry]:
        """Entries with their fields; pending entries deleted from the stream meanwhile (by an
        operator's XDEL or a producer's MAXLEN) have nothing left to deliver and are acked."""
        if not reply:
            return []
        _stream, items = reply[0]
        # An entry always has a field (XADD requires one), so no fields means deleted.
        gone = [entry_id for entry_id, fields in items if not fields]
        if gone:
            self.client.xack(self.keys.stream(job_type), GROUP, *gone)
        return [IntakeEntry(job_type, entry_id, fields) for entry_id, fields in items if fields]

    def scan(self, job_type: str, limit: int, visit: Callable[[str, dict[str, str]], None]) -> bool:
        """Call `visit(entry id, fields)` on up to `limit` entries, oldest first, read or not,
        a page at a time; True when that was every entry (False: more were left unread)."""
        key = self.keys.stream(job_type)
        start, seen = "-", 0
        while seen < limit:
            page = self.client.xrange(key, min=start, count=min(SCAN_PAGE, limit - seen))
            if not page:
                return True
            for entry_id, fields in page:
                visit(entry_id, fields)
            seen += len(page)
            start = "(" + page[-1][0]
        return not self.client.xrange(key, min=start, count=1)

    def oldest_id(self, job_type: str) -> str | None:
        first = self.client.xrange(self.keys.stream(job_type), count=1)
        return first[0][0] if first else None

    def length(self, job_type: str) -> int:
        return self.client.xlen(self.keys.stream(job_type))

    def pending_summary(self, job_type: str) -> dict:
        """XPENDING's summary ({'pending': n, 'min': oldest id, ...}); nothing pending when
        the group does not exist yet (nothing was ever read)."""
        try:
            return self.client.xpending(self.keys.stream(job_type), GROUP)
        except redis.ResponseError:
            return {"pending": 0}
