"""The dead-letter stream: entries rejected or failed for good, each a copy of the original
entry's fields with the reason, and an index of them by request, so that a later success of
the request removes them. Operators' commands on it: dead_letters.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import redis

from queue_pipelines.intake.entries import GROUP, entry_id_key
from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.scripts import IntakeScripts

# What the dead-letter script writes on every letter (lua/dead_letter.lua), besides the
# run_id and request_key that only some letters have a value for.
DEAD_LETTER_FIELDS = ("stream", "entry_id", "reason", "fields", "dead_lettered_at")

RawLetter = tuple[str, dict[str, str]]  # (letter id, its fields as stored)

# Why a letter was written, for dead_letters_total (docs/metrics.md): the intake refused the
# entry (`rejected: ...`, dispatch.py), its runs never started or never settled it
# (settling.py), a notice failed after its effect, or its request failed for good in a run.
REJECTED, NOT_STARTED, UNSETTLED, NOTICE, FAILED = (
    "rejected",
    "not_started",
    "unsettled",
    "notice",
    "failed",
)


def failure_class(reason: str) -> str:
    """The class of a letter's reason, as dispatch.py and settling.py word the reasons."""
    if reason.startswith("rejected"):
        return REJECTED
    if "ended before any step started" in reason:
        return NOT_STARTED
    if "was not settled after" in reason:
        return UNSETTLED
    return FAILED


def letter_fields(letter: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """A dead letter's copy of its original entry's fields, and what is wrong with the
    letter (None: nothing). A letter not written by the intake (by hand, or by another
    program) may lack fields or hold something else: it is reported, never a crash."""
    missing = [name for name in DEAD_LETTER_FIELDS if name not in letter]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    original: object = {}
    if "fields" in letter:
        try:
            original = json.loads(letter["fields"])
        except ValueError as exc:
            problems.append(f"'fields' is not JSON ({exc})")
            original = {}
    if not isinstance(original, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in original.items()
    ):
        problems.append("'fields' is not an object of strings")
        original = {}
    return original, "; ".join(problems) or None


class DeadLetterStream:
    def __init__(self, client: redis.Redis, keys: IntakeKeys, scripts: IntakeScripts):
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def move(
        self, job_type: str, entry_ids: Sequence[str], reason: str, run_id: str, request_key: str
    ) -> int:
        """Entries of `job_type`'s stream become dead letters, and leave the stream, its
        pending list and the request's waiting set, in one script."""
        if not entry_ids:
            return 0
        moved = int(
            self.scripts.dead_letter(
                keys=[
                    self.keys.stream(job_type),
                    self.keys.dead_letters,
                    self.keys.waiting(request_key),
                    self.keys.dead_letter_index(request_key),
                ],
                args=[
                    datetime.now(UTC).isoformat(),
                    reason,
                    run_id,
                    GROUP,
                    request_key,
                    *entry_ids,
                ],
            )
        )
        # After the script: a crash in between leaves a letter uncounted, never a count
        # without its letter.
        if moved:
            self._count(job_type, failure_class(reason), moved)
        return moved

    def add(self, job_type: str, request_key: str, reason: str, run_id: str, fields: dict) -> str:
        """A dead letter for a request that was never an entry of `job_type`'s stream (a
        notice that failed after its effect): the same shape as the letters `move` writes,
        with no entry id, indexed by request so that the request's later success removes it."""
        letter_id = self.client.xadd(
            self.keys.dead_letters,
            {
                "stream": self.keys.stream(job_type),
                "entry_id": "",
                "reason": reason,
                "run_id": run_id,
                "request_key": request_key,
                "fields": json.dumps(fields),
                "dead_lettered_at": datetime.now(UTC).isoformat(),
            },
        )
        # A crash before this leaves the letter listed until an operator purges it.
        self.client.sadd(self.keys.dead_letter_index(request_key), letter_id)
        self._count(job_type, NOTICE, 1)
        return letter_id

    def _count(self, job_type: str, klass: str, letters: int) -> None:
        self.client.hincrby(self.keys.dead_letter_counts, f"{job_type}/{klass}", letters)

    def count_replay(self, job_type: str) -> None:
        self.client.hincrby(self.keys.replay_counts, job_type, 1)

    def counts(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """The letters written since the first, by (job type, failure class), and the letters
        replayed, by job type: counters in Redis, so every gateway replica reads the same."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.dead_letter_counts)
        pipe.hgetall(self.keys.replay_counts)
        written, replayed = pipe.execute()
        by_class = {}
        for field_name, value in written.items():
            job_type, _, klass = str(field_name).partition("/")
            by_class[(job_type, klass)] = int(value)
        return by_class, {str(k): int(v) for k, v in replayed.items()}

    def resolve(self, job_type: str, request_key: str) -> int:
        """Remove the dead letters of a request that succeeded after all; only those from
        `job_type`'s stream. Returns how many were removed."""
        index = self.keys.dead_letter_index(request_key)
        ids = sorted(self.client.smembers(index), key=entry_id_key)
        if not ids:
            return 0
        stream = self.keys.stream(job_type)
        mine = [
            letter_id
            for letter_id, found in ((letter_id, self.get(letter_id)) for letter_id in ids)
            if found is None or found[1].get("stream") == stream
        ]
        if not mine:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.xdel(self.keys.dead_letters, *mine)
        pipe.srem(index, *mine)
        return int(pipe.execute()[0])

    def newest(self, count: int = 100) -> list[dict]:
        """The newest dead letters first, each with its original fields decoded; a letter
        whose fields cannot be (not written by the intake) has `malformed` saying why."""
        letters = []
        for letter_id, fields in self.page(count=count):
            letter = dict(fields)
            letter["id"] = letter_id
            letter["fields"], problem = letter_fields(fields)
            if problem:
                letter["malformed"] = problem
            letters.append(letter)
        return letters

    def page(self, before: str = "+", count: int = 500) -> list[RawLetter]:
        """Up to `count` letters as stored, newest first, from id `before` (inclusive) down."""
        return self.client.xrevrange(self.keys.dead_letters, max=before, count=count)

    def of_entry(self, job_type: str, entry_id: str, page_size: int = 500) -> RawLetter | None:
        """The letter an entry of `job_type`'s stream became, if it did. A letter's id is taken
        when it is written, after its entry's: only the letters newer than the entry are read."""
        stream, before = self.keys.stream(job_type), "+"
        while True:
            page = self.client.xrevrange(
                self.keys.dead_letters, max=before, min=entry_id, count=page_size
            )
            for letter_id, fields in page:
                if fields.get("entry_id") == entry_id and fields.get("stream") == stream:
                    return letter_id, fields
            if len(page) < page_size:
                return None
            before = f"({page[-1][0]}"

    def get(self, letter_id: str) -> RawLetter | None:
        found = self.client.xrange(self.keys.dead_letters, letter_id, letter_id)
        return found[0] if found else None

    def remove(self, letters: Sequence[tuple[str, str]]) -> int:
        """Delete letters, given as (letter id, request key or ''), and their index entries."""
        if not letters:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.xdel(self.keys.dead_letters, *[letter_id for letter_id, _ in letters])
        for letter_id, request_key in letters:
            if request_key:
                pipe.srem(self.keys.dead_letter_index(request_key), letter_id)
        return int(pipe.execute()[0])

    def length(self) -> int:
        return self.client.xlen(self.keys.dead_letters)
