"""The SQLite ledger's group commit: the writes of a process's threads that arrive while a
transaction is under way share the next one (one commit), each still answered only once it
is committed, and one that fails fails alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from queue_pipelines.ledger import DONE, PENDING, EffectInFlight, EffectLedger


@pytest.fixture
def ledger(tmp_path) -> Iterator[EffectLedger]:
    ledger = EffectLedger(f"sqlite:///{tmp_path}/ledger.db")
    yield ledger
    ledger.dispose()


def commits_of(ledger: EffectLedger) -> list[int]:
    commits = [0]

    @sa.event.listens_for(ledger.engine, "commit")
    def _count(_conn):
        commits[0] += 1

    return commits


def hold_a_transaction(ledger: EffectLedger) -> tuple[threading.Thread, threading.Event]:
    """A writer in the middle of its transaction until the returned event is set."""
    inside, release = threading.Event(), threading.Event()

    def change(conn: sa.Connection) -> None:
        inside.set()
        assert release.wait(10)

    holder = threading.Thread(target=ledger.write, args=(change,))
    holder.start()
    assert inside.wait(10)
    return holder, release


def wait_for_waiting_writes(ledger: EffectLedger, count: int) -> None:
    for _ in range(1000):
        with ledger._group._lock:
            if len(ledger._group._waiting) >= count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} writes never queued")


def in_one_group(ledger: EffectLedger, calls: dict[str, Callable[[], object]]) -> dict:
    """Each call in a thread of its own, all queued behind a held transaction, then let go
    together: what each returned, or raised."""
    holder, release = hold_a_transaction(ledger)
    outcomes: dict[str, object] = {}

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            outcomes[name] = call()
        except Exception as exc:
            outcomes[name] = exc

    writers = [threading.Thread(target=attempt, args=item) for item in calls.items()]
    for writer in writers:
        writer.start()
    wait_for_waiting_writes(ledger, len(writers))
    release.set()
    holder.join(10)
    for writer in writers:
        writer.join(10)
    return outcomes


def test_writes_that_arrive_during_a_transaction_share_the_next_commit(ledger):
    commits = commits_of(ledger)
    holder, release = hold_a_transaction(ledger)
    claims: dict[str, object] = {}
    claimers = [
        threading.Thread(
            target=lambda key=f"payment:t1:k{i}": claims.__setitem__(
                key, ledger.claim(key, "payment", "run-1")
            )
        )
        for i in range(5)
    ]
    for claimer in claimers:
        claimer.start()
    wait_for_waiting_writes(ledger, 5)
    # Nobody is answered before the commit that carries their claim.
    assert claims == {} and ledger.count() == 0

    release.set()
    holder.join(10)
    for claimer in claimers:
        claimer.join(10)

    assert commits[0] == 2  # the held transaction, then the five claims in one
    assert {key: claim.status for key, claim in claims.items()} == {
        f"payment:t1:k{i}": PENDING for i in range(5)
    }
    assert ledger.count(kind="payment", status=PENDING) == 5


def test_a_write_that_fails_in_a_group_fails_alone(ledger):
    ledger.claim("payment:t1:held", "payment", "run-1")
    ledger.claim("payment:t1:done", "payment", "run-1")
    outcomes = in_one_group(
        ledger,
        {
            # Another run still holds this claim: refused, and its attempt count stays.
            "in flight": lambda: ledger.claim(
                "payment:t1:held", "payment", "run-2", lambda run: run == "run-1"
            ),
            "record": lambda: ledger.record("payment:t1:done", {"pi": "pi_1"}),
            "fresh": lambda: ledger.claim("payment:t1:new", "payment", "r"),
        },
    )

    assert isinstance(outcomes["in flight"], EffectInFlight)
    assert ledger.get("payment:t1:held")["attempts"] == 1
    assert ledger.get("payment:t1:held")["run_id"] == "run-1"
    assert ledger.result_of("payment:t1:done") == {"pi": "pi_1"}
    assert ledger.get("payment:t1:new")["status"] == PENDING


def test_a_failed_commit_fails_every_write_it_carried(ledger):
    """What a caller is told is on disk is on disk: when the commit fails, so do they all,
    and none of their changes is there."""
    ledger.claim("payment:t1:k", "payment", "run-1")
    commits = [0]

    @sa.event.listens_for(ledger.engine, "commit")
    def _fail_the_second(_conn):
        commits[0] += 1
        if commits[0] == 2:  # the held transaction's is the first, the group's the second
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    outcomes = in_one_group(
        ledger,
        {
            "record": lambda: ledger.record("payment:t1:k", {"pi": "pi_1"}),
            "claim": lambda: ledger.claim("payment:t1:new", "payment", "r"),
        },
    )

    assert isinstance(outcomes["record"], sa.exc.OperationalError)
    assert isinstance(outcomes["claim"], sa.exc.OperationalError)
    assert ledger.get("payment:t1:k")["status"] == PENDING
    assert ledger.get("payment:t1:new") is None
    assert ledger.result_of("payment:t1:k") is None
    # The ledger goes on: the next write commits.
    ledger.record("payment:t1:k", {"pi": "pi_1"})
    assert ledger.get("payment:t1:k")["status"] == DONE
