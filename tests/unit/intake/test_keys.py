"""Every Redis key of the project is spelled in one place, queue_pipelines/intake/keys.py, and
the public ones (those producers in other languages write, and operators read with
redis-cli) are those docs/intake.md names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.registry import JOB_TYPES

ROOT = Path(__file__).resolve().parents[3]
KEYS_MODULE = ROOT / "queue_pipelines" / "intake" / "keys.py"
# What follows the prefix in a key (keys.py's table).
KINDS = (
    "intake|dead-letter|request|outcome|waiting|assigned|batch|inflight|lock|limits|breaker|quota"
    "|counts"
)
SPELLED_ELSEWHERE = [
    re.compile(rf"\}}:({KINDS})\b"),  # f"{prefix}:outcome:{key}", f"{redis.key_prefix}:lock:..."
    re.compile(rf"""["']qp:({KINDS})\b"""),  # "qp:intake:payment"
    re.compile(r"prefix\}:"),  # f"{self.prefix}:anything"
]


def project_modules() -> list[Path]:
    return sorted(
        path
        for package in ("queue_pipelines", "resources", "sensors")
        for path in (ROOT / package).rglob("*.py")
        if path != KEYS_MODULE
    )


def test_no_module_but_keys_py_builds_a_redis_key():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in project_modules()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(pattern.search(line) for pattern in SPELLED_ELSEWHERE)
    ]
    assert found == [], "spell Redis keys in queue_pipelines/intake/keys.py:\n" + "\n".join(found)


def test_the_grep_catches_the_spellings_it_is_for():
    for line in (
        'lock = client.lock(f"{redis.key_prefix}:lock:refund:{pi}")',
        'return f"{self.prefix}:outcome:{request_key}"',
        'client.xlen("qp:intake:payment")',
    ):
        assert any(pattern.search(line) for pattern in SPELLED_ELSEWHERE), line
    assert not any(
        pattern.search('batch_key = f"{job_type}:{tenant}:{digest}"')
        for pattern in SPELLED_ELSEWHERE
    )


def test_the_public_keys_are_those_the_docs_name():
    keys = IntakeKeys()
    assert [keys.stream(job_type) for job_type in JOB_TYPES] == [
        f"qp:intake:{job_type}" for job_type in JOB_TYPES
    ]
    assert keys.dead_letters == "qp:dead-letter"
    assert keys.dead_letter_index("payment:acme:o-1") == "qp:dead-letter:request:payment:acme:o-1"
    assert keys.request_record("payment:acme:o-1") == "qp:request:payment:acme:o-1"
    assert keys.outcome("payment:acme:o-1") == "qp:outcome:payment:acme:o-1"
    assert keys.refund_lock("pi_1") == "qp:lock:refund:pi_1"
    assert keys.transfer_lock("Mint1") == "qp:lock:transfer:Mint1"
    assert keys.breaker("stripe") == "qp:breaker:stripe"
    docs = (ROOT / "docs" / "intake.md").read_text()
    for named in ("qp:intake:payment", "qp:dead-letter", "qp:request:<request key>"):
        assert named in docs


def test_every_key_starts_with_the_prefix_and_a_stream_is_found_again():
    keys = IntakeKeys("tenant-a")
    built = [
        keys.stream("refund"),
        keys.dead_letters,
        keys.dead_letter_index("r"),
        keys.request_record("r"),
        keys.outcome("r"),
        keys.waiting("r"),
        keys.assigned("r"),
        keys.batch("b"),
        keys.inflight("refund"),
        keys.refund_lock("pi"),
        keys.transfer_lock("mint"),
        keys.rate_limits,
        keys.breaker("stripe"),
        keys.email_quota("acme", "2026-01-01"),
        keys.dead_letter_counts,
        keys.replay_counts,
    ]
    assert all(key.startswith("tenant-a:") for key in built)
    assert len(set(built)) == len(built)
    assert keys.job_type_of(keys.stream("refund")) == "refund"
    assert keys.job_type_of("qp:intake:refund") is None  # another prefix's stream
    assert keys.pattern() == "tenant-a:*" and keys.pattern("outcome") == "tenant-a:outcome:*"


def test_an_unknown_job_type_has_no_stream():
    with pytest.raises(ValueError, match="unknown job type 'parcel'"):
        IntakeKeys().stream("parcel")
