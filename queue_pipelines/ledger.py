"""The effect ledger: the first line of defence against doing an external effect twice.

Every charge, refund, mint or transfer is keyed by its request (kind, tenant, idempotency
key). Before the provider call the key is claimed; right after it the result is recorded.
A later attempt for the same key (a duplicate entry, an op retry, a run retry, a full
re-execution from the UI) finds the recorded result and returns it instead of acting again.

A claim left `pending` means an earlier attempt ended without recording an outcome: the
provider may or may not have acted. The caller asks the provider what happened before acting
again (queue_pipelines/effects.py), so nothing is done twice on a guess; the provider's own
idempotency key (Stripe keeps those for 24 hours) is a second line.

Storage is one SQL table: PostgreSQL in production (shared by every run worker), SQLite
under DAGSTER_HOME for the embedded defaults.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from queue_pipelines.failures import TransientError

PENDING = "pending"
DONE = "done"
# Rows that only point at something found elsewhere (written with `record(index=...)`).
INDEX_KINDS = frozenset({"customer", "mint-address"})

_metadata = sa.MetaData()
effects = sa.Table(
    "qp_effect_ledger",
    _metadata,
    sa.Column("effect_key", sa.String(400), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def effect_key(kind: str, tenant_id: str, idempotency_key: str) -> str:
    """The ledger key of one effect of one request: `<kind>:<tenant>:<idempotency key>`."""
    return f"{kind}:{tenant_id}:{idempotency_key}"


@dataclass(frozen=True)
class Claim:
    """The state of a key after claiming it."""

    effect_key: str
    status: str
    attempts: int  # including this one
    created_at: datetime
    result: dict[str, Any] | None  # what was recorded, once done
    # While pending: what earlier attempts noted before or after their provider call (`note`),
    # for the attempt that resumes the claim to know where to look.
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == DONE

    @property
    def resumed(self) -> bool:
        """An earlier attempt claimed the key and never recorded an outcome."""
        return self.status == PENDING and self.attempts > 1


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _serialize_sqlite_transactions(engine: sa.Engine) -> None:
    """pysqlite defers BEGIN to the first write and mishandles savepoints, so two processes
    could each see the other's claim as their own. Taking the write lock at BEGIN makes a
    claim (insert or bump, then read back) one serial step, as it is on PostgreSQL."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        # Write-ahead log: a commit appends to the log with one fsync instead of rewriting the
        # database through a rollback journal, and readers never wait for the writer. The
        # batch runs claim and record from several threads and processes at once, so this is
        # most of a run's time in the default mode (docs/performance.md).
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# How long a writer waits for another to finish before giving up (a transient failure, which
# the request's backoff retries): SQLite's own busy timeout, kept the same.
WRITE_WAIT_SECONDS = 30.0


class SqliteWriterTurn:
    """One SQLite write transaction at a time, across the threads and processes that share a
    ledger file, each waiting its turn on locks of its own rather than in SQLite's busy handler.

    SQLite's busy handler, which is what a BEGIN IMMEDIATE that finds the write lock taken
    falls back on, sleeps 1, 2, 5, 10, ... 100 ms between its tries, and a writer that
    finishes wakes nobody (a py-spy dump of a burst found 14-15 of a run worker's 16
    threads there). Here the threads of a process queue on one lock, and
    the one whose turn it is takes an advisory lock on `<ledger>.writer` that the other
    processes' writers wait on; both are let go at the end of the transaction (commit or
    rollback), and by the kernel when a process dies. SQLite's own lock is still taken
    inside (BEGIN IMMEDIATE): this only orders the writers, it guards nothing on its own,
    and a writer that does not take its turn (another tool on the same file) is still
    serialised by SQLite."""

    # Threads of one process share a lock and a file descriptor per ledger file: the
    # advisory lock belongs to the open file, so two of a process's threads holding it
    # through two descriptors would exclude each other too, but through one they would not.
    _locks: dict[str, tuple[threading.Lock, int]] = {}
    _locks_guard = threading.Lock()

    def __init__(self, database_path: str, wait_seconds: float = WRITE_WAIT_SECONDS):
        self.path = os.path.abspath(database_path) + ".writer"
        self.wait_seconds = wait_seconds

    @classmethod
    def _forget_in_child(cls) -> None:
        # A forked child (a run worker from the forkserver) opens its own: the parent's open
        # file, shared through the fork, would share its lock too.
        cls._locks = {}
        cls._locks_guard = threading.Lock()

    def _lock_and_file(self) -> tuple[threading.Lock, int]:
        with self._locks_guard:
            if self.path not in self._locks:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._locks[self.path] = (threading.Lock(), fd)
            return self._locks[self.path]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        lock, fd = self._lock_and_file()
        deadline = time.monotonic() + self.wait_seconds
        if not lock.acquire(timeout=self.wait_seconds):
            raise TimeoutError(f"no turn to write {self.path} within {self.wait_seconds:.0f} s")
        try:
            self._lock_file(fd, deadline)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            lock.release()

    def _lock_file(self, fd: int, deadline: float) -> None:
        # Another process's writer holds it for one transaction (about a millisecond): ask
        # again every 0.5 ms, which costs a system call and keeps the wait bounded, where
        # a blocking flock would wait forever for a stopped process.
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no turn to write {self.path} within {self.wait_seconds:.0f} s"
                    ) from None
                time.sleep(0.0005)


os.register_at_fork(after_in_child=SqliteWriterTurn._forget_in_child)


T = TypeVar("T")


@dataclass(eq=False)
class _Write:
    """One caller's change, waiting for the transaction that carries it to commit."""

    change: Callable[[sa.Connection], Any]
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to commit the waiting changes, its own among them
    value: Any = None
    error: BaseException | None = None


class GroupCommit:
    """The SQLite ledger's writes of one process, several callers' to a transaction.

    Each commit waits for the disk (an fsync in WAL mode with synchronous FULL), and the
    writers take turns (SqliteWriterTurn): one commit per claim, note and record made the
    disk's flushes the pace of a whole burst, 16 threads in each run worker waiting in
    line (docs/performance.md, "Run workers (issue 18, burst)"). Here the callers that
    arrive while a transaction is under way wait together; then one of them (the leader)
    makes all their changes in one transaction, each in a savepoint of its own, and
    commits once. Nobody is answered before that commit: what a caller is told is on disk
    is on disk, exactly as with one transaction each, and the changes are made one after
    another, as if each had its own transaction in that order. A change that raises is
    rolled back to its savepoint and its caller gets the error; the others stand. A commit
    that fails fails every change it carried."""

    def __init__(self, engine: sa.Engine, turn: Callable[[], contextlib.AbstractContextManager]):
        self._engine = engine
        self._turn = turn
        self._lock = threading.Lock()
        self._waiting: list[_Write] = []
        self._leading = False

    def write(self, change: Callable[[sa.Connection], T]) -> T:
        """`change(conn)` in a transaction, committed before this returns its value."""
        write = _Write(change)
        with self._lock:
            self._waiting.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.woken.wait()
            lead = write.lead
        if lead:
            with self._lock:
                group, self._waiting = self._waiting, []
            try:
                self._commit(group)
            finally:
                with self._lock:
                    if self._waiting:  # they came meanwhile: the first of them leads next
                        self._waiting[0].lead = True
                        self._waiting[0].woken.set()
                    else:
                        self._leading = False
        if write.error is not None:
            raise write.error
        return write.value

    def _commit(self, group: list[_Write]) -> None:
        try:
            with self._turn(), self._engine.begin() as conn:
                if len(group) == 1:
                    # Alone: its error rolls the transaction back, no savepoint needed.
                    group[0].value = group[0].change(conn)
                else:
                    for write in group:
                        try:
                            with conn.begin_nested():
                                write.value = write.change(conn)
                        except Exception as exc:
                            write.error = exc
        except BaseException as exc:
            for write in group:
                if write.error is None:
                    write.error, write.value = exc, None
        finally:
            for write in group:
                write.woken.set()


class EffectInFlight(TransientError):
    def __init__(self, effect_key: str, run_id: str):
        super().__init__(
            f"{effect_key} is being acted on by run {run_id}, which is still going: "
            "waiting for it rather than acting twice",
            code="in_flight",
        )
        self.run_id = run_id


class EffectLedger:
    def __init__(self, database_url: str):
        if database_url.startswith("sqlite:///"):
            Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # Run workers are separate processes: wait for a writer rather than fail.
            engine = sa.create_engine(database_url, connect_args={"timeout": WRITE_WAIT_SECONDS})
            _serialize_sqlite_transactions(engine)
            self._turn: Callable[[], contextlib.AbstractContextManager[None]] = SqliteWriterTurn(
                database_url.removeprefix("sqlite:///")
            )
            # Reads take no write lock: in WAL mode a reader sees the last commit and waits
            # for nobody, so lookups (a customer noted earlier, a recorded result) do not
            # queue behind every worker's claims.
            self._reader = sa.create_engine(
                database_url, connect_args={"timeout": WRITE_WAIT_SECONDS}
            )
        else:
            engine = sa.create_engine(database_url, pool_pre_ping=True)
            self._reader = engine
            # PostgreSQL orders its writers itself, row by row.
            self._turn = contextlib.nullcontext
        self.engine = engine
        insert = (sqlite_insert if engine.dialect.name == "sqlite" else postgresql_insert)(effects)
        self._insert_if_absent = insert.on_conflict_do_nothing(index_elements=["effect_key"])
        with self._turn():
            _metadata.create_all(engine, checkfirst=True)

        self._group = GroupCommit(engine, self._turn) if engine.dialect.name == "sqlite" else None

    def reading(self) -> sa.Connection:
        """A connection for reads, which take no write lock (WAL: the last commit, at once)."""
        return self._reader.connect()

    def write(self, change: Callable[[sa.Connection], T]) -> T:
        """`change(conn)` committed: what every change to the ledger's database goes through
        (the reconciliation table's too). On SQLite it shares a transaction (one commit) with
        the changes of the process's other threads made at the same moment (GroupCommit), in
        a savepoint of its own; PostgreSQL commits each on its own."""
        if self._group is not None:
            return self._group.write(change)
        with self.engine.begin() as conn:
            return change(conn)

    def claim(
        self,
        effect_key: str,
        kind: str,
        run_id: str,
        run_is_live: Callable[[str], bool] = lambda _run_id: False,
    ) -> Claim:
        """Claim `effect_key` for `run_id`, or report what an earlier attempt recorded.

        A pending claim held by another run that is still going (`run_is_live`) is not
        taken over: that run may be calling the provider right now. EffectInFlight says so,
        and it is transient, so the caller retries once that run has finished.
        """
        now = _now()

        def change(conn: sa.Connection) -> Claim:
            # One statement when the key is new, as it nearly always is: the insert is
            # skipped, not failed, when the row is there (no savepoint to roll back to).
            inserted = conn.execute(
                self._insert_if_absent.values(
                    effect_key=effect_key,
                    kind=kind,
                    status=PENDING,
                    attempts=1,
                    run_id=run_id,
                    result=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            if inserted.rowcount == 1:
                return Claim(effect_key, PENDING, attempts=1, created_at=now, result=None)
            # Row lock on PostgreSQL; SQLite already holds its write lock (BEGIN IMMEDIATE).
            held = conn.execute(
                sa.select(effects).where(effects.c.effect_key == effect_key).with_for_update()
            ).one()
            if held.status == PENDING:
                if held.run_id != run_id and run_is_live(held.run_id):
                    raise EffectInFlight(effect_key, held.run_id)
                conn.execute(
                    effects.update()
                    .where(effects.c.effect_key == effect_key)
                    .values(attempts=effects.c.attempts + 1, run_id=run_id, updated_at=now)
                )
            row = conn.execute(sa.select(effects).where(effects.c.effect_key == effect_key)).one()
            # A pending row's result column holds its notes; a done row's, the result.
            stored = json.loads(row.result) if row.result else None
            return Claim(
                effect_key=row.effect_key,
                status=row.status,
                attempts=row.attempts,
                created_at=_aware(row.created_at),
                result=stored if row.status == DONE else None,
                notes=(stored or {}) if row.status == PENDING else {},
            )

        return self.write(change)

    def note(self, effect_key: str, name: str, value: str) -> None:
        """Add `value` to the list `name` of a pending claim's notes (kept until the claim is
        recorded or released): what an attempt that may never record its outcome knows, such
        as the customer a charge is about to name, and which the next attempt needs to find
        the effect at the provider."""

        def change(conn: sa.Connection) -> None:
            stored = conn.execute(
                sa.select(effects.c.result)
                .where(effects.c.effect_key == effect_key, effects.c.status == PENDING)
                .with_for_update()
            ).one_or_none()
            if stored is None:
                return  # recorded or released meanwhile: nothing is in doubt
            notes = json.loads(stored.result) if stored.result else {}
            if value in notes.setdefault(name, []):
                return
            notes[name].append(value)
            conn.execute(
                effects.update()
                .where(effects.c.effect_key == effect_key, effects.c.status == PENDING)
                .values(result=json.dumps(notes, sort_keys=True), updated_at=_now())
            )

        self.write(change)

    def record(
        self,
        effect_key: str,
        result: dict[str, Any],
        index: tuple[str, str, dict[str, Any]] | None = None,
    ) -> None:
        """The effect happened: keep its result for every later attempt.

        `index` (key, kind, result) is a second row, done, written in the same transaction:
        the effect found by another key (a mint by its address). An index row already there
        is kept: it was written for the same effect."""
        now = _now()

        def change(conn: sa.Connection) -> None:
            conn.execute(
                effects.update()
                .where(effects.c.effect_key == effect_key)
                .values(status=DONE, result=json.dumps(result, sort_keys=True), updated_at=now)
            )
            if index is not None:
                index_key, index_kind, index_result = index
                conn.execute(
                    self._insert_if_absent.values(
                        effect_key=index_key,
                        kind=index_kind,
                        status=DONE,
                        attempts=1,
                        run_id=self._run_of(conn, effect_key),
                        result=json.dumps(index_result, sort_keys=True),
                        created_at=now,
                        updated_at=now,
                    )
                )

        self.write(change)

    @staticmethod
    def _run_of(conn: sa.Connection, effect_key: str) -> str:
        return (
            conn.execute(
                sa.select(effects.c.run_id).where(effects.c.effect_key == effect_key)
            ).scalar_one_or_none()
            or ""
        )

    def find_done(
        self, kind: str, key_prefix: str, result_field: str, value: str
    ) -> list[dict[str, Any]]:
        """The done effects of `kind` whose key starts with `key_prefix` and whose result has
        `result_field` equal to `value`: a scan of those keys (an index row is the fast way)."""
        needle = f"{json.dumps(result_field)}: {json.dumps(value)}"  # as record() writes it
        query = sa.select(effects).where(
            effects.c.kind == kind,
            effects.c.status == DONE,
            effects.c.effect_key.startswith(key_prefix, autoescape=True),
            effects.c.result.contains(needle, autoescape=True),
        )
        with self.reading() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return [row for row in rows if json.loads(row["result"]).get(result_field) == value]

    def release(self, effect_key: str) -> None:
        """The provider refused the first and only attempt outright, so nothing happened: a
        later attempt (an operator re-executing after fixing the cause) starts afresh."""
        self.write(
            lambda conn: conn.execute(
                effects.delete().where(
                    effects.c.effect_key == effect_key, effects.c.status == PENDING
                )
            )
        )

    def result_of(self, effect_key: str) -> dict[str, Any] | None:
        """The recorded result of a done key (an effect or an index row), or None."""
        row = self.get(effect_key)
        return json.loads(row["result"]) if row and row["status"] == DONE else None

    def forget_index(self, effect_key: str, kind: str) -> None:
        """Drop an index row of `kind` that has gone stale. Effects themselves are never
        forgotten: an index row only points at something found elsewhere."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"{kind} rows record effects and are never forgotten")
        self.write(
            lambda conn: conn.execute(
                effects.delete().where(effects.c.effect_key == effect_key, effects.c.kind == kind)
            )
        )

    def get(self, effect_key: str) -> dict[str, Any] | None:
        with self.reading() as conn:
            row = conn.execute(
                sa.select(effects).where(effects.c.effect_key == effect_key)
            ).one_or_none()
        return dict(row._mapping) if row else None

    def count(self, kind: str | None = None, status: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(effects)
        if kind:
            query = query.where(effects.c.kind == kind)
        if status:
            query = query.where(effects.c.status == status)
        with self.reading() as conn:
            return int(conn.execute(query).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()
        self._reader.dispose()
