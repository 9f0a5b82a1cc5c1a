"""The intake streams on a real Redis: delivery, redelivery, settling and dead letters."""

from __future__ import annotations

import threading
import time

from queue_pipelines.intake.payloads import RefundPayload
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import CONSUMER, GROUP


def refund(key: str, tenant: str = "acme") -> Envelope:
    return Envelope(
        type="refund",
        tenant_id=tenant,
        idempotency_key=key,
        payload=RefundPayload(payment_intent_id="pi_1"),
    )


def test_read_returns_new_entries_then_redelivers_from_an_old_cursor(intake):
    ids = intake.enqueue_many([refund(f"k{i}") for i in range(5)])

    first = intake.read("refund", "0-0", count=3)
    assert [e.entry_id for e in first] == ids[:3]
    # A tick that failed keeps the old cursor: the same entries come back, then the rest.
    again = intake.read("refund", "0-0", count=10)
    assert [e.entry_id for e in again] == ids
    # A tick that succeeded moved the cursor past them: nothing more.
    assert intake.read("refund", ids[-1], count=10) == []


def test_reclaim_scans_only_entries_idle_long_enough(intake):
    ids = intake.enqueue_many([refund(f"k{i}") for i in range(3)])
    intake.read("refund", "0-0", count=3)

    next_id, fresh = intake.reclaim("refund", min_idle_seconds=60, start_id="0-0", count=10)
    assert fresh == []
    time.sleep(0.05)
    next_id, stale = intake.reclaim("refund", min_idle_seconds=0.01, start_id="0-0", count=2)
    assert [e.entry_id for e in stale] == ids[:2]
    next_id, rest = intake.reclaim("refund", min_idle_seconds=0.01, start_id=next_id, count=2)
    assert [e.entry_id for e in rest] == ids[2:]
    assert next_id == "0-0"  # the whole pending list was scanned


def test_settle_acks_and_deletes_every_entry_of_a_request(intake):
    ids = intake.enqueue_many([refund("same"), refund("same"), refund("other")])
    intake.read("refund", "0-0", count=10)
    intake.track("refund", "refund:acme:same", ids[:2])

    assert intake.settle("refund", "refund:acme:same") == 2

    stream = intake.stream_key("refund")
    assert [entry_id for entry_id, _ in intake.client.xrange(stream)] == [ids[2]]
    assert intake.client.xpending(stream, GROUP)["pending"] == 1
    assert intake.settle("refund", "refund:acme:same") == 0  # settling twice is harmless


def test_dead_letter_keeps_fields_and_reason_and_leaves_the_stream(intake):
    stream = intake.stream_key("refund")
    intake.ensure_group("refund")
    entry_id = intake.client.xadd(stream, {"envelope": "{}", "trace": "abc"})
    intake.read("refund", "0-0", count=1)

    moved = intake.dead_letter("refund", [entry_id], "rejected: test", run_id="run-1")

    assert moved == 1
    [letter] = intake.dead_letters()
    assert letter["entry_id"] == entry_id
    assert letter["stream"] == stream
    assert letter["reason"] == "rejected: test"
    assert letter["run_id"] == "run-1"
    assert letter["fields"] == {"envelope": "{}", "trace": "abc"}
    assert intake.client.xlen(stream) == 0
    assert intake.client.xpending(stream, GROUP)["pending"] == 0


def test_dead_letter_request_moves_all_tracked_entries(intake):
    ids = intake.enqueue_many([refund("dup"), refund("dup")])
    intake.read("refund", "0-0", count=10)
    intake.track("refund", "refund:acme:dup", ids)

    assert intake.dead_letter_request("refund", "refund:acme:dup", "run r failed", "r") == 2
    letters = intake.dead_letters()
    assert {letter["entry_id"] for letter in letters} == set(ids)
    assert {letter["request_key"] for letter in letters} == {"refund:acme:dup"}


def test_stats_count_length_pending_and_dead_letters(intake):
    ids = intake.enqueue_many([refund(f"k{i}") for i in range(4)])
    intake.read("refund", "0-0", count=3)
    intake.dead_letter("refund", [ids[0]], "rejected: x")

    stats = intake.stats().as_dict()

    assert stats["streams"]["refund"]["length"] == 3
    assert stats["streams"]["refund"]["pending"] == 2
    assert stats["streams"]["refund"]["undelivered"] == 1
    assert stats["streams"]["refund"]["oldest_pending_age_seconds"] >= 0
    assert stats["streams"]["payment"]["length"] == 0
    assert stats["dead_letters"] == 1
    consumers = intake.client.xinfo_consumers(intake.stream_key("refund"), GROUP)
    assert [c["name"] for c in consumers] == [CONSUMER]


def test_entries_deleted_while_pending_are_acked_not_delivered(intake):
    ids = intake.enqueue_many([refund("a"), refund("b"), refund("c")])
    intake.read("refund", "0-0", count=3)
    stream = intake.stream_key("refund")
    intake.client.xdel(stream, ids[0], ids[2])  # an operator's XDEL, or a producer's MAXLEN

    history = intake.read("refund", "0-0", count=10)
    next_id, reclaimed = intake.reclaim("refund", min_idle_seconds=0, start_id="0-0", count=10)

    assert [e.entry_id for e in history] == [ids[1]]
    assert [e.entry_id for e in reclaimed] == [ids[1]]
    assert intake.client.xpending(stream, GROUP)["pending"] == 1


def test_dead_lettering_an_entry_already_settled_leaves_no_phantom_letter(intake):
    [entry_id] = intake.enqueue_many([refund("settled")])
    intake.read("refund", "0-0", count=1)
    intake.track("refund", "refund:acme:settled", [entry_id])
    intake.settle("refund", "refund:acme:settled")
    intake.track("refund", "refund:acme:settled", [entry_id])  # a late tick re-tracked it

    assert intake.dead_letter_request("refund", "refund:acme:settled", "run failed", "r") == 0
    assert intake.dead_letters() == []


def test_dead_letter_ids_sort_numerically():
    from queue_pipelines.intake.streams import entry_id_key

    assert sorted(["10-0", "9-1", "9-0"], key=entry_id_key) == ["9-0", "9-1", "10-0"]


def test_wait_for_new_wakes_for_an_undelivered_entry_and_delivers_nothing(intake):
    delivered = intake.enqueue_many([refund("old")])
    assert [e.entry_id for e in intake.read("refund", "0-0", count=10)] == delivered
    assert not intake.wait_for_new("refund", 0.2)  # only delivered entries: times out

    later = threading.Timer(0.3, lambda: intake.enqueue_many([refund("new")]))
    later.start()
    assert intake.wait_for_new("refund", 5.0)
    later.join()
    # Still undelivered: the next read gets it, after the cursor of the first one.
    [entry] = intake.read("refund", delivered[-1], count=10)
    assert '"new"' in entry.raw_envelope
