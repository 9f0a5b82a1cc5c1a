"""What `request show` adds to an outcome, read from an effect ledger on SQLite files: the
recorded result under each job type's ledger kind, nothing for a type without an effect or
an effect not done, no ledger file created by looking, and an unreadable ledger said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from queue_pipelines.ledger import EffectLedger, effect_key
from queue_pipelines.request_effects import EFFECT_KINDS, RecordedEffects


@pytest.fixture
def ledger_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


def record(url: str, kind: str, tenant: str, key: str, result: dict) -> None:
    ledger = EffectLedger(url)
    try:
        ledger.claim(effect_key(kind, tenant, key), kind, "run-1")
        ledger.record(effect_key(kind, tenant, key), result)
    finally:
        ledger.dispose()


def test_each_job_types_effect_is_found_under_its_ledger_kind(ledger_url):
    for job_type, kind in EFFECT_KINDS.items():
        record(ledger_url, kind, "acme", f"{job_type}-1", {"job_type": job_type})
    effects = RecordedEffects(ledger_url)
    try:
        for job_type in EFFECT_KINDS:
            assert effects(f"{job_type}:acme:{job_type}-1") == {"job_type": job_type}
        # A customer request's effect is not the row noting a buyer's customer (kind customer).
        record(ledger_url, "customer", "acme", "c-2", {"noted": True})
        assert effects("customer:acme:c-2") is None
        # Another tenant's request with the same key did nothing.
        assert effects("payment:globex:payment-1") is None
    finally:
        effects.close()


def test_a_claim_not_yet_done_and_a_type_without_an_effect_show_nothing(ledger_url):
    ledger = EffectLedger(ledger_url)
    ledger.claim(effect_key("payment", "acme", "k1"), "payment", "run-1")
    ledger.dispose()
    effects = RecordedEffects(ledger_url)

    assert effects("payment:acme:k1") is None
    assert effects("notification:acme:k1") is None
    # An idempotency key may hold colons: only the first two split the request key.
    record(ledger_url, "refund", "acme", "order:7", {"refund_id": "re_1"})
    assert effects("refund:acme:order:7") == {"refund_id": "re_1"}
    effects.close()


def test_looking_does_not_create_an_embedded_ledger(tmp_path):
    path = tmp_path / "absent" / "ledger.db"
    effects = RecordedEffects(f"sqlite:///{path}")

    assert effects("payment:acme:k1") is None
    assert not path.exists() and not path.parent.exists()
    effects.close()


def test_a_ledger_that_cannot_be_read_raises_naming_the_ledger(tmp_path):
    path = Path(tmp_path) / "ledger.db"
    path.write_bytes(b"this is not a SQLite database, but it is long enough to look like one" * 20)
    effects = RecordedEffects(f"sqlite:///{path}")

    with pytest.raises(RuntimeError, match="the effect ledger cannot be read: "):
        effects("payment:acme:k1")
    effects.close()
