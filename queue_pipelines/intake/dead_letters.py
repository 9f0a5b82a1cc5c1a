"""The dead-letter stream for operators: find, show, replay and purge dead letters.

A dead letter keeps the original entry's fields (`fields`, with the envelope as written), so a
replay puts the same envelope, with the same idempotency key, back on its intake stream. A
request that had in fact succeeded is then acked by the intake (its outcome says so) and
charged no second time; one that failed, for a reason since fixed or with its payload fixed,
runs again (its failed outcome is forgotten first).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from queue_pipelines.intake.dead_letter_stream import letter_fields
from queue_pipelines.intake.entries import entry_id_key
from queue_pipelines.intake.request_records import request_digest
from queue_pipelines.intake.schema import Envelope, envelope_from_dict
from queue_pipelines.intake.streams import IntakeStreams

_LETTER_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '7d' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class DeadLetterFilter:
    job_type: str | None = None
    tenant: str | None = None
    reason: str | None = None  # a substring, case-insensitive
    older_than_seconds: float | None = None
    newer_than_seconds: float | None = None

    def matches(self, letter: dict[str, Any], now: float) -> bool:
        age = now - letter["dead_lettered_ms"] / 1000
        return (
            (self.job_type is None or letter["job_type"] == self.job_type)
            and (self.tenant is None or letter["tenant_id"] == self.tenant)
            and (self.reason is None or self.reason.lower() in letter.get("reason", "").lower())
            and (self.older_than_seconds is None or age >= self.older_than_seconds)
            and (self.newer_than_seconds is None or age <= self.newer_than_seconds)
        )


def _decorate(intake: IntakeStreams, letter_id: str, raw: dict[str, str]) -> dict[str, Any]:
    """The letter as stored, with `fields` decoded and what the filters match on: job type
    (from the stream), tenant and idempotency key. `malformed` says what is wrong with a
    letter the intake did not write (None for one it did)."""
    letter: dict[str, Any] = dict(raw)
    letter["id"] = letter_id
    letter["fields"], letter["malformed"] = letter_fields(raw)
    letter["dead_lettered_ms"] = entry_id_key(letter_id)[0]
    letter["job_type"] = intake.keys.job_type_of(raw.get("stream", ""))
    envelope = _envelope_dict(letter) or {}
    # The request key was written by the intake after validation; the envelope is the
    # producer's (or whoever wrote the letter): the key's tenant is the one to trust.
    key_parts = raw.get("request_key", "").split(":", 2)
    if len(key_parts) == 3:
        letter["tenant_id"], letter["idempotency_key"] = key_parts[1], key_parts[2]
    else:
        letter["tenant_id"] = _string_or_none(envelope.get("tenant_id"))
        letter["idempotency_key"] = _string_or_none(envelope.get("idempotency_key"))
    return letter


def _string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _envelope_dict(letter: dict[str, Any]) -> dict | None:
    raw = letter["fields"].get("envelope")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def iter_dead_letters(intake: IntakeStreams, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every dead letter, newest first."""
    end = "+"
    while True:
        items = intake.dead_letter_page(end, page)
        for letter_id, raw in items:
            yield _decorate(intake, letter_id, raw)
        if len(items) < page:
            return
        ms, seq = entry_id_key(items[-1][0])
        end = f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}"


def find_dead_letters(
    intake: IntakeStreams, where: DeadLetterFilter, limit: int | None = None
) -> list[dict[str, Any]]:
    now = time.time()
    found = []
    for letter in iter_dead_letters(intake):
        if where.matches(letter, now):
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
    return found


def get_dead_letter(intake: IntakeStreams, letter_id: str) -> dict[str, Any] | None:
    if not _LETTER_ID.fullmatch(letter_id):  # Redis would answer an error, not "none"
        return None
    found = intake.dead_letter_by_id(letter_id)
    return _decorate(intake, *found) if found else None


def remove_dead_letters(intake: IntakeStreams, letters: list[dict[str, Any]]) -> int:
    return intake.remove_dead_letters(
        [(letter["id"], letter.get("request_key") or "") for letter in letters]
    )


class ReplayError(Exception):
    pass


def _refuse_another_request(
    intake: IntakeStreams, letter: dict[str, Any], envelope: Envelope
) -> None:
    """A replay acts for the envelope's tenant and reopens its request's outcome, so the
    envelope must be the request the letter was dead-lettered as. The request key and the
    stream are the intake's own record of that; the envelope is only what the letter holds,
    and a letter written by hand could name another tenant's request."""
    if letter.get("stream") != intake.stream_key(envelope.type):
        raise ReplayError(
            f"dead letter {letter['id']} came from stream {letter.get('stream')!r} but its "
            f"envelope is a {envelope.type!r} request: not replayed"
        )
    recorded = letter.get("request_key") or ""
    if recorded and recorded != envelope.request_key:
        recorded_type, recorded_tenant, _ = (recorded.split(":", 2) + ["", ""])[:3]
        differs = [
            f"{what} {mine!r} where the letter's request key has {theirs!r}"
            for what, mine, theirs in (
                ("type", envelope.type, recorded_type),
                ("tenant_id", envelope.tenant_id, recorded_tenant),
            )
            if mine != theirs
        ] or ["another idempotency key"]
        raise ReplayError(
            f"dead letter {letter['id']} was dead-lettered as request {recorded!r}, but its "
            f"envelope names {', '.join(differs)}: not replayed (a replay acts for the "
            "envelope's tenant and reopens its request; only the letter's own request may be "
            "replayed)"
        )


def replay_dead_letter(
    intake: IntakeStreams, letter: dict[str, Any], payload_changes: dict | None = None
) -> tuple[str, str]:
    """Put the dead letter's original envelope (its idempotency key unchanged) back on its
    stream, with `payload_changes` merged into the payload when given (a fixed request), and
    remove the dead letter. Returns (new entry id, request key).

    Enqueue first, remove second: a crash in between leaves the dead letter listed beside the
    new entry, never neither; the new entry's success then removes it (resolve_dead_letters).
    """
    if letter.get("malformed"):
        raise ReplayError(
            f"dead letter {letter['id']} is malformed ({letter['malformed']}): nothing to replay"
        )
    envelope = _envelope_dict(letter)
    if envelope is None:
        raise ReplayError(
            f"dead letter {letter['id']} has no readable envelope to replay "
            f"(reason: {letter.get('reason', '')})"
        )
    if payload_changes:
        if not isinstance(envelope.get("payload"), dict):
            raise ReplayError(f"dead letter {letter['id']}: its payload is not an object")
        envelope = {**envelope, "payload": {**envelope["payload"], **payload_changes}}
    try:
        validated = envelope_from_dict(envelope)
    except Exception as exc:  # EnvelopeError and friends: say why, replay nothing
        raise ReplayError(
            f"dead letter {letter['id']} does not validate: {getattr(exc, 'reason', exc)}"
        ) from exc
    _refuse_another_request(intake, letter, validated)
    # A request that failed for good keeps that outcome for days, and the next tick would
    # dead-letter its replay on sight of it: the operator's replay says "try again".
    intake.reopen_request(validated.request_key, request_digest(validated))
    entry_id = intake.enqueue(validated)
    remove_dead_letters(intake, [letter])
    intake.letters.count_replay(validated.type)
    return entry_id, validated.request_key
