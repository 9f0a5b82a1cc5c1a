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

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

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
            engine = sa.create_engine(database_url, connect_args={"timeout": 30})
            _serialize_sqlite_transactions(engine)
            # Reads take no write lock: in WAL mode a reader sees the last commit and waits
            # for nobody, so lookups (a customer noted earlier, a recorded result) do not
            # queue behind every worker's claims.
            self._reader = sa.create_engine(database_url, connect_args={"timeout": 30})
        else:
            engine = sa.create_engine(database_url, pool_pre_ping=True)
            self._reader = engine
        self.engine = engine
        _metadata.create_all(engine, checkfirst=True)

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
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        effects.insert().values(
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
                fresh = True
            except IntegrityError:
                fresh = False
            if not fresh:
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

    def note(self, effect_key: str, name: str, value: str) -> None:
        """Add `value` to the list `name` of a pending claim's notes (kept until the claim is
        recorded or released): what an attempt that may never record its outcome knows, such
        as the customer a charge is about to name, and which the next attempt needs to find
        the effect at the provider."""
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
            conn.execute(
                effects.update()
                .where(effects.c.effect_key == effect_key)
                .values(status=DONE, result=json.dumps(result, sort_keys=True), updated_at=now)
            )
            if index is not None:
                index_key, index_kind, index_result = index
                try:
                    with conn.begin_nested():
                        conn.execute(
                            effects.insert().values(
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
                except IntegrityError:
                    pass

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
        with self._reader.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        return [row for row in rows if json.loads(row["result"]).get(result_field) == value]

    def release(self, effect_key: str) -> None:
        """The provider refused the first and only attempt outright, so nothing happened: a
        later attempt (an operator re-executing after fixing the cause) starts afresh."""
        with self.engine.begin() as conn:
            conn.execute(
                effects.delete().where(
                    effects.c.effect_key == effect_key, effects.c.status == PENDING
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
        with self.engine.begin() as conn:
            conn.execute(
                effects.delete().where(effects.c.effect_key == effect_key, effects.c.kind == kind)
            )

    def get(self, effect_key: str) -> dict[str, Any] | None:
        with self._reader.connect() as conn:
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
        with self._reader.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()
        self._reader.dispose()
