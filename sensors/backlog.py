"""The intake backlog inside Dagster: what waits, per job type and tenant, so that an operator
sees work piling up without the CLI (docs/operations.md).

A sensor reads the numbers `queue stats` prints (queue_pipelines/intake/stats.py) and counts
the newest dead letters, and records them as a materialization of one asset per job type,
`intake_backlog/<type>`: numbers that the asset's Plots tab draws over time, and a table per
tenant. Each tick also says it in one line on the sensor page.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from queue_pipelines.intake.entries import ENVELOPE_FIELD
from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.stats import IntakeStats, tenant_of
from resources import RedisResource

BACKLOG_INTERVAL_SECONDS = 30
# An unchanged backlog is recorded again only this often: the plots keep a point per period,
# and an idle stack does not write an event per job type every tick.
UNCHANGED_RECORD_SECONDS = 600
# The newest dead letters counted per job type and tenant (the total is always exact).
DEAD_LETTER_SCAN = 1000
ASSET_PREFIX = "intake_backlog"


def backlog_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([ASSET_PREFIX, job_type])


def backlog_assets() -> list[dg.AssetSpec]:
    """One asset per job type, recorded by the backlog sensor (nothing materializes it)."""
    return [
        dg.AssetSpec(
            backlog_asset_key(job_type),
            group_name=ASSET_PREFIX,
            description=f"What waits on the {job_type} intake: requests not yet read, in "
            "flight in a batch, the oldest one's age, and dead letters, per tenant too; "
            f"recorded by intake_backlog_sensor every {BACKLOG_INTERVAL_SECONDS} s when it "
            "changes. See the Plots tab.",
        )
        for job_type in JOB_TYPES
    ]


@dataclass(frozen=True)
class Backlog:
    """One job type's backlog."""

    waiting: int  # in the stream, not read by the sensor yet
    in_flight: int  # read and in a batch whose run has not settled it
    oldest_age_seconds: float  # the oldest request still in the stream, from its enqueue
    dead_letters: int  # among the newest DEAD_LETTER_SCAN letters
    # tenant -> (requests in the stream, oldest one's age in seconds, dead letters)
    tenants: dict[str, tuple[int, float, int]]

    def numbers(self) -> dict[str, float]:
        return {
            "waiting": self.waiting,
            "in_flight": self.in_flight,
            "oldest_age_seconds": round(self.oldest_age_seconds, 1),
            "dead_letters": self.dead_letters,
        }

    def summary(self, job_type: str) -> str:
        if not (self.waiting or self.in_flight or self.dead_letters):
            return f"{job_type}: nothing waits"
        return (
            f"{job_type}: {self.waiting} waiting, {self.in_flight} in flight, oldest "
            f"{self.oldest_age_seconds:.0f} s, {self.dead_letters} dead letters"
        )

    def tenant_table(self) -> dg.TableMetadataValue:
        columns = [
            dg.TableColumn("tenant", "string"),
            dg.TableColumn("in_stream", "int"),
            dg.TableColumn("oldest_age_seconds", "float"),
            dg.TableColumn("dead_letters", "int"),
        ]
        rows = [
            dg.TableRecord(
                {
                    "tenant": tenant,
                    "in_stream": in_stream,
                    "oldest_age_seconds": round(oldest, 1),
                    "dead_letters": dead,
                }
            )
            # The tenants with the most waiting first.
            for tenant, (in_stream, oldest, dead) in sorted(
                self.tenants.items(), key=lambda item: (-item[1][0], -item[1][2], item[0])
            )
        ]
        return dg.MetadataValue.table(records=rows, schema=dg.TableSchema(columns=columns))


def dead_letters_by_type_and_tenant(
    letters: Sequence[tuple[str, dict[str, str]]],
) -> Counter[tuple[str, str]]:
    """(job type, tenant) -> letters: the type from the stream a letter came from, the tenant
    from its request key or, for an entry rejected before it had one, its envelope."""
    counts: Counter[tuple[str, str]] = Counter()
    for _letter_id, fields in letters:
        job_type = (fields.get("stream") or "?").rsplit(":", 1)[-1]
        tenant = (fields.get("request_key") or "").split(":")[1:2]
        if not tenant:
            try:
                original = json.loads(fields.get("fields") or "{}")
            except ValueError:
                original = {}
            tenant = [
                tenant_of(original.get(ENVELOPE_FIELD) if isinstance(original, dict) else None)
            ]
        counts[(job_type, tenant[0])] += 1
    return counts


def backlogs(stats: IntakeStats, dead: Counter[tuple[str, str]]) -> dict[str, Backlog]:
    found = {}
    for stream in stats.streams:
        tenant_dead = {t: n for (jt, t), n in dead.items() if jt == stream.job_type}
        tenants = {
            tenant: (waiting.waiting, waiting.oldest_age_seconds, tenant_dead.get(tenant, 0))
            for tenant, waiting in stream.tenants.items()
        }
        for tenant, n in tenant_dead.items():
            tenants.setdefault(tenant, (0, 0.0, n))
        found[stream.job_type] = Backlog(
            waiting=stream.undelivered,
            in_flight=stream.pending,
            oldest_age_seconds=stream.oldest_waiting_age_seconds or 0.0,
            dead_letters=sum(tenant_dead.values()),
            tenants=tenants,
        )
    return found


def backlog_events(
    found: dict[str, Backlog], cursor: dict[str, dict], now: float
) -> list[dg.AssetMaterialization]:
    """A materialization per job type whose numbers changed since the last one recorded, or
    whose last one is older than UNCHANGED_RECORD_SECONDS; `cursor` is updated to match."""
    events = []
    for job_type, backlog in found.items():
        numbers, last = backlog.numbers(), cursor.get(job_type)
        if last and last["numbers"] == numbers and now - last["at"] < UNCHANGED_RECORD_SECONDS:
            continue
        events.append(
            dg.AssetMaterialization(
                asset_key=backlog_asset_key(job_type),
                description=backlog.summary(job_type),
                metadata={**numbers, "tenants": backlog.tenant_table()},
            )
        )
        cursor[job_type] = {"numbers": numbers, "at": now}
    return events


def tick_line(found: dict[str, Backlog], total_dead_letters: int) -> str:
    busy = [b.summary(t) for t, b in found.items() if b.waiting or b.in_flight or b.dead_letters]
    return f"{'; '.join(busy) or 'nothing waits'} ({total_dead_letters} dead letters in all)"


def build_backlog_sensor(
    minimum_interval_seconds: int = BACKLOG_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="intake_backlog_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Every {minimum_interval_seconds} s, records what waits on the intake (per job "
            "type and tenant: waiting, in flight, oldest age, dead letters) on the "
            f"{ASSET_PREFIX}/<type> assets, whose Plots tab draws it; launches nothing."
        ),
    )
    def intake_backlog_sensor(context: dg.SensorEvaluationContext, redis: RedisResource):
        intake = redis.intake()
        stats = intake.stats()
        found = backlogs(
            stats, dead_letters_by_type_and_tenant(intake.dead_letter_page(count=DEAD_LETTER_SCAN))
        )
        cursor = json.loads(context.cursor) if context.cursor else {}
        events = backlog_events(found, cursor, time.time())
        return dg.SensorResult(
            asset_events=events,
            cursor=json.dumps(cursor),
            skip_reason=tick_line(found, stats.dead_letters),
        )

    return intake_backlog_sensor
