"""End-to-end payment bench: the whole stack as `make run` starts it, against a plain worker
loop doing the same calls, in one invocation.

    uv run --frozen python -m bench.e2e --messages 2000 --mode batch --json
    uv run --frozen python -m bench.e2e --single 5 --json
    uv run --frozen python -m bench.e2e --backlog 10000 --json
    uv run --frozen python -m bench.e2e --messages 30 --mode per-message
    uv run --frozen python -m bench.e2e --messages 1000 --latency-ms 300
    uv run --frozen python -m bench.e2e --messages 200 --postgres postgresql://...

It starts, each on a free loopback port and stopped again on exit (Ctrl-C and errors too):
an embedded redis-server, the code server as `make run` starts it (`python -m
queue_pipelines.warm_code_server api grpc`: Dagster's, with the run workers forked by its
forkserver, its descendants) and a real `dagster-daemon` (run queue, sensors, run monitoring)
on it, in one process group (queue_pipelines/sandbox/stack.py); the instance lives in a temporary DAGSTER_HOME with the project's
dagster.yaml (or dagster-postgres storage with --postgres). The sandbox servers, localstripe
(behind a delaying relay with --latency-ms) and the SMTP sink, are processes of their own, and
each side gets fresh ones: the baseline and the pipeline start from the same, empty state.

The baseline (charge_once + the notifier's e-mail, as many threads as the payment
concurrency, no orchestrator) runs first, on its own servers. Then the pipeline: it waits for
the intake sensor's first tick, enqueues N payments at once and waits until every one is
settled, reading Redis cheaply (one XLEN per poll while entries wait; each outcome once,
pipelined). Latency is per request, from its entry id (Redis' clock at enqueue) to the
outcome's `at` (recorded by the run as the request ends), and split into phases by the run
that settled it. `--single K` enqueues one request at a time, K times, on an idle stack, and
reports the median. `--backlog N` enqueues N before the code server and the daemon start,
with the run queue stopped, and reports the sensor's busy ticks per 1,000 requests and the
daemon's RSS while it batches them. CPU seconds are per process, from /proc. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.registry import SPECS
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import IntakeStreams, entry_id_key, redis_client
from queue_pipelines.sandbox.servers import (
    start_localstripe,
    start_on_a_free_port,
    start_redis,
    stop,
)
from queue_pipelines.sandbox.smtp_sink import start_smtp_sink
from queue_pipelines.sandbox.stack import (
    DagsterGroup,
    isolated_env,
    per_type_variable,
    write_instance_config,
)

STRIPE_KEY = "sk_test_bench_e2e"
PIPELINE_TENANT = "bench-e2e"
BASELINE_TENANT = "bench-baseline"
SAMPLE_SECONDS = 0.5
POLL_SECONDS = 0.25
OUTCOME_READS_PER_ROUND_TRIP = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# processes


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # the command name may hold spaces: the fields after its closing ')' are safe
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    tree = _children_of()
    found, todo = [], [pid]
    while todo and len(found) < 10_000:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Every SAMPLE_SECONDS: the summed RSS of a process tree (the daemon, its code server and
    the run workers), the daemon's own RSS, and how many processes the tree holds."""

    def __init__(self, pid: int, *others: int):
        self.pid = pid
        self.roots = (pid, *others)
        self.peak_tree_mb = 0.0
        self.peak_daemon_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        pids = [p for root in self.roots for p in descendants(root)]
        self.peak_tree_mb = max(self.peak_tree_mb, sum(rss_mb(p) for p in pids))
        self.peak_daemon_mb = max(self.peak_daemon_mb, rss_mb(self.pid))
        self.peak_processes = max(self.peak_processes, len(pids))

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _cpu_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, its own CPU seconds, its reaped children's CPU seconds)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command name: state, ppid, ... utime (14th field), stime, cutime, cstime
        own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        table[int(entry)] = (int(fields[1]), own, reaped)
    return table


def cpu_seconds(roles: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far, per role: each process with its descendants, live ones and
    those a member of the tree reaped (their time is in the reaper's cutime). The code
    server's descendants (its forkserver and the run workers it forked) are counted apart as
    run_workers; the bench is this process."""
    table = _cpu_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _own, _reaped) in table.items():
        children.setdefault(ppid, []).append(pid)

    def tree_total(root: int) -> float:
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                total += table[pid][1] + table[pid][2]
                todo += children.get(pid, [])
        return total

    found = {}
    for role, pid in roles.items():
        if role == "code_server":
            own = table[pid][1] if pid in table else 0.0
            found["code_server"] = own
            found["run_workers"] = tree_total(pid) - own
        else:
            found[role] = tree_total(pid)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    found["bench"] = usage.ru_utime + usage.ru_stime
    return found


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: round(max(0.0, after[role] - before.get(role, 0.0)), 2) for role in after}


# ---------------------------------------------------------------------------------------------
# the stack


def coordinator_overrides(settings: list[str] | None) -> dict:
    """dagster.yaml overrides of the run coordinator's settings given as `name=yaml value`."""
    config = {}
    for setting in settings or []:
        name, _, value = setting.partition("=")
        config[name] = yaml.safe_load(value)
    return {"run_coordinator": {"config": config}} if config else {}


def envelopes(
    tenant: str, count: int, email_domain: str, tenants: int = 1, first: int = 0
) -> list[Envelope]:
    """`count` payments (numbered from `first`), spread round-robin over `tenants` tenants
    (`tenant`, `tenant`-1 ...)."""
    return [
        Envelope(
            type="payment",
            tenant_id=tenant if tenants == 1 else f"{tenant}-{i % tenants}",
            idempotency_key=f"e2e-{i}",
            payload=PaymentPayload(
                order_id=f"o{i}",
                amount=1000 + i,
                currency="usd",
                customer_email=f"buyer{i % 50}@{email_domain}",
                payment_method="pm_card_visa",
            ),
        )
        for i in range(first, first + count)
    ]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_baseline(stripe_url: str, smtp_port: int, workdir: Path, count: int) -> dict:
    """The same domain calls as payment_job, from a plain thread pool: no Redis, no Dagster."""
    from queue_pipelines.ledger import EffectLedger
    from queue_pipelines.notifications.events import payment_notice
    from queue_pipelines.notifications.notifier import Notifier
    from queue_pipelines.notifications.tenants import TenantDirectory
    from queue_pipelines.payments import charge_once
    from queue_pipelines.providers.smtp import SmtpSender
    from queue_pipelines.providers.stripe import StripeApi
    from queue_pipelines.providers.webhooks import WebhookSender
    from queue_pipelines.sandbox.defaults import SANDBOX_WEBHOOK_SECRET

    api = StripeApi(STRIPE_KEY, api_base=stripe_url)
    ledger = EffectLedger(f"sqlite:///{workdir / 'baseline-ledger.db'}")
    directory = TenantDirectory.from_file(None)
    notifier = Notifier(
        smtp=SmtpSender(host="127.0.0.1", port=smtp_port, security="none", sandbox=True),
        webhooks=WebhookSender(secret=SANDBOX_WEBHOOK_SECRET),
        ledger=ledger,
        profile_of=directory.profile,
        webhook_url_for=lambda _kind, _profile: None,
        operator_email="operators@example.com",
        run_id="baseline",
    )

    def work(envelope: Envelope) -> None:
        outcome = charge_once(
            api,
            ledger,
            tenant_id=envelope.tenant_id,
            idempotency_key=envelope.idempotency_key,
            payment=envelope.payload,
            run_id="baseline",
            run_is_live=lambda _run_id: False,
        )
        notice = payment_notice(
            envelope.tenant_id, envelope.idempotency_key, envelope.payload, outcome
        )
        notifier.tell(notice, f"payment {outcome.payment_intent_id} succeeded")

    items = envelopes(BASELINE_TENANT, count, "baseline.example.com")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SPECS["payment"].concurrency) as pool:
        list(pool.map(work, items))
    seconds = time.perf_counter() - started
    ledger.dispose()
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "messages_per_second": round(count / seconds, 2),
    }


def count_payment_intents(stripe_url: str, tenant: str) -> dict[str, int]:
    """PaymentIntents in localstripe of the tenants named `tenant`..., per tenant and
    idempotency key (from their metadata)."""
    import stripe

    client = stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": stripe_url}, max_network_retries=0
    )
    counts: dict[str, int] = {}
    for intent in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
        metadata = intent.metadata.to_dict() if intent.metadata else {}
        if metadata.get("tenant_id", "").startswith(tenant):
            key = f"{metadata['tenant_id']}:{metadata.get('idempotency_key', '')}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def wait_for_log(path: Path, text: str, process: subprocess.Popen, timeout: float) -> float:
    """Seconds until `text` shows up in the log at `path`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.monotonic() - started
        if process.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {process.returncode}; see {path}")
        time.sleep(0.25)
    raise RuntimeError(f"{text!r} did not appear in {path} within {timeout:.0f} s")


class SettledPoller:
    """Waits until requests are settled, reading Redis cheaply: while entries wait in the
    stream, one XLEN per poll (a request's outcome is written before its entry leaves the
    stream); once it is empty, the outcomes not read yet, pipelined, each read once unless it
    was missing. `commands` counts the Redis commands sent."""

    def __init__(
        self,
        streams: IntakeStreams,
        job_type: str = "payment",
        interval: float = POLL_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.streams = streams
        self.stream = streams.stream_key(job_type)
        self.interval = interval
        self.sleep = sleep
        self.clock = clock
        self.commands = 0

    def wait(self, request_keys: list[str], timeout: float) -> dict[str, dict]:
        """The outcomes found, by request key: all of them, or those there when `timeout`
        seconds have passed."""
        found: dict[str, dict] = {}
        deadline = self.clock() + timeout
        while True:
            self.commands += 1
            if self.streams.client.xlen(self.stream) == 0:
                self._read([key for key in request_keys if key not in found], found)
                if len(found) == len(request_keys):
                    return found
            if self.clock() >= deadline:
                break
            self.sleep(self.interval)
        self._read([key for key in request_keys if key not in found], found)
        return found

    def _read(self, keys: list[str], found: dict[str, dict]) -> None:
        for start in range(0, len(keys), OUTCOME_READS_PER_ROUND_TRIP):
            chunk = keys[start : start + OUTCOME_READS_PER_ROUND_TRIP]
            pipe = self.streams.client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(self.streams.keys.outcome(key))
            self.commands += len(chunk)
            for key, outcome in zip(chunk, pipe.execute(), strict=True):
                if outcome:
                    found[key] = outcome


def sensor_ticks(home: Path, name: str) -> tuple[list[float], list[float]]:
    """Durations (s) of the daemon's ended ticks of sensor `name`: those that requested runs
    (busy) and the others (idle: an intake sensor listens up to 4 s for requests first)."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    busy, idle = [], []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name != name:
                continue
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
                if tick.tick_data.end_timestamp:
                    duration = tick.tick_data.end_timestamp - tick.timestamp
                    (busy if tick.run_ids or tick.run_keys else idle).append(duration)
    return busy, idle


def busy_tick_sizes(home: Path, name: str) -> list[tuple[float, float, int]]:
    """(start as unix time, duration in s, requests batched) of each of sensor `name`'s ended
    ticks that requested runs, oldest first."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    sizes = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name != name:
                continue
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
                if tick.tick_data.end_timestamp and tick.run_ids:
                    runs = instance.get_runs(filters=dg.RunsFilter(run_ids=list(tick.run_ids)))
                    batched = sum(requests_in(run) for run in runs)
                    duration = tick.tick_data.end_timestamp - tick.timestamp
                    sizes.append((tick.timestamp, duration, batched))
    return sorted(sizes)


def requests_in(run) -> int:
    """How many requests a batch run carries: its op config's `requests`."""
    return sum(
        len(op.get("config", {}).get("requests", [])) for op in run.run_config["ops"].values()
    )


def batched_requests(home: Path) -> int:
    """Requests in the instance's payment runs so far."""
    import dagster as dg

    from queue_pipelines import tags

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={tags.JOB_TYPE: "payment"}))
        return sum(requests_in(run) for run in runs)


def tick_figures(home: Path) -> dict:
    busy, idle = sensor_ticks(home, "payment_intake_sensor")
    ticks = busy + idle

    def ms(values: list[float], pick) -> float | None:
        return round(pick(values) * 1000, 1) if values else None

    return {
        "sensor_ticks": len(ticks),
        "sensor_tick_p50_ms": ms(ticks, statistics.median),
        "sensor_tick_max_ms": ms(ticks, max),
        "busy_ticks": len(busy),
        "busy_tick_p50_ms": ms(busy, statistics.median),
        "busy_tick_max_ms": ms(busy, max),
        "idle_ticks": len(idle),
        "idle_tick_p50_ms": ms(idle, statistics.median),
    }


PHASES = (
    "enqueue_to_run_created",  # the sensor's tick read it and requested its batch's run
    "run_created_to_launched",  # in the run queue, until the coordinator launched it
    "launched_to_started",  # the run worker's start: process, code location, RUN_START
    "started_to_settled",  # the run's work until this request's outcome was recorded
)


def phases_of_requests(
    home: Path, settled: list[tuple[float, float, str]]
) -> list[dict[str, float] | None]:
    """Per request (enqueued at, settled at, the run that settled it): its latency split into
    PHASES (seconds), or None where the run's marks are missing."""
    import dagster as dg

    marks: dict[str, tuple[float, float, float]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in {run_id for _e, _s, run_id in settled if run_id}:
            record = instance.get_run_record_by_id(run_id)
            starting = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.RUN_STARTING, limit=1
            ).records
            if record is None or not starting or not record.start_time:
                continue
            marks[run_id] = (
                record.create_timestamp.timestamp(),
                starting[0].event_log_entry.timestamp,
                record.start_time,
            )
    phases: list[dict[str, float] | None] = []
    for enqueued, settled_at, run_id in settled:
        if run_id not in marks:
            phases.append(None)
            continue
        points = (enqueued, *marks[run_id], settled_at)
        phases.append(
            {
                phase: round(end - begin, 3)
                for phase, begin, end in zip(PHASES, points, points[1:], strict=False)
            }
        )
    return phases


def phase_percentiles(phases: list[dict[str, float] | None]) -> dict:
    """p50 and p95 of each phase over the requests."""

    def pick(q: float) -> dict[str, float | None]:
        picked = {}
        for phase in PHASES:
            values = [split[phase] for split in phases if split is not None]
            picked[phase] = round(percentile(values, q), 3) if values else None
        return picked

    return {"phases_p50_seconds": pick(0.5), "phases_p95_seconds": pick(0.95)}


def run_phases(home: Path) -> dict:
    """Where the runs' time went, medians over the runs (seconds): queued (created -> the run
    coordinator launched it), launch (-> the run process has imported the code location and
    started), work (-> it ended)."""
    import dagster as dg

    queued, launch, work = [], [], []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(limit=5000)
        for record in records:
            starting = instance.get_records_for_run(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING, limit=1
            ).records
            if not (starting and record.start_time and record.end_time):
                continue
            launched = starting[0].event_log_entry.timestamp
            queued.append(launched - record.create_timestamp.timestamp())
            launch.append(record.start_time - launched)
            work.append(record.end_time - record.start_time)

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    return {
        "runs": len(records),
        "run_queued_p50_seconds": median(queued),
        "run_launch_p50_seconds": median(launch),
        "run_work_p50_seconds": median(work),
    }


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every process started here is stopped."""

    def raise_interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Sandbox:
    """localstripe (behind the relay with --latency-ms) and the SMTP sink, processes of their
    own."""

    stripe_url: str  # what the pipeline or the baseline calls
    stripe_direct: str  # localstripe itself, for counting what it holds
    smtp_port: int
    pids: dict[str, int]


@contextlib.contextmanager
def sandbox_servers(directory: Path, latency_ms: float) -> Iterator[Sandbox]:
    """Fresh sandbox servers with an empty state, stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # Idempotency-Key ignored, so that `duplicate_charges` counts what the project's own
        # ledger let through, not what the sandbox's idempotency cache hid.
        stripe_port, localstripe = start_on_a_free_port(
            lambda p: start_localstripe(p, directory / "localstripe.log", idempotency=False)
        )
        stack.callback(stop, localstripe)
        stripe_direct = f"http://127.0.0.1:{stripe_port}"
        stripe_url = stripe_direct
        if latency_ms:
            from queue_pipelines.sandbox.relay import Relay

            proxy = Relay(stripe_direct, delay_seconds=latency_ms / 1000).start()
            stack.callback(proxy.stop)
            stripe_url = proxy.url
        smtp_port, smtp_sink = start_on_a_free_port(
            lambda p: start_smtp_sink(p, directory / "outbox", directory / "smtp-sink.log")
        )
        stack.callback(stop, smtp_sink)
        yield Sandbox(
            stripe_url,
            stripe_direct,
            smtp_port,
            {"localstripe": localstripe.pid, "smtp_sink": smtp_sink.pid},
        )


def baseline_on_fresh_servers(args: argparse.Namespace, workdir: Path) -> dict:
    count = args.baseline_messages or args.messages
    with sandbox_servers(workdir / "baseline", args.latency_ms) as sandbox:
        before = cpu_seconds(sandbox.pids)
        figures = run_baseline(sandbox.stripe_url, sandbox.smtp_port, workdir, count)
        figures["cpu_seconds"] = cpu_used(before, cpu_seconds(sandbox.pids))
    return figures


@dataclass
class Stack:
    home: Path
    sandbox: Sandbox
    streams: IntakeStreams
    coordinator: dict
    roles: dict[str, int]  # process role -> pid, for cpu_seconds()
    sampler: RssSampler
    startup_seconds: float
    idle_daemon_mb: float


@contextlib.contextmanager
def pipeline_stack(
    args: argparse.Namespace,
    workdir: Path,
    batch_size: int,
    before_start: Callable[[IntakeStreams], None] | None = None,
) -> Iterator[Stack]:
    """Redis, fresh sandbox servers, the code server and the daemon, up and the payment
    sensor ticking; all stopped on exit. `before_start(streams)` runs once Redis is up and
    before the code server and the daemon start (--backlog fills the stream there)."""
    home = workdir / "home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        redis_port, redis_server = start_on_a_free_port(
            lambda p: start_redis(p, None, workdir / "redis.log")
        )
        stack.callback(stop, redis_server)
        sandbox = stack.enter_context(sandbox_servers(workdir / "pipeline", args.latency_ms))

        prefix = f"qpe2e{uuid.uuid4().hex[:6]}"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        config = write_instance_config(
            home, postgres_url=args.postgres, overrides=coordinator_overrides(args.coordinator)
        )
        batching = {per_type_variable("qp_batch_size", "payment"): str(batch_size)}
        if args.batch_wait is not None:
            batching[per_type_variable("qp_batch_wait", "payment")] = str(args.batch_wait)
        # The effect ledger stays on SQLite under DAGSTER_HOME with --postgres too: only the
        # instance's storage moves (no DAGSTER_POSTGRES_URL for the run workers).
        env = isolated_env(
            home,
            redis_url=redis_url,
            key_prefix=prefix,
            stripe_url=sandbox.stripe_url,
            smtp_port=sandbox.smtp_port,
            extra=batching,
        )
        streams = IntakeStreams(redis_client(redis_url), prefix)
        if before_start is not None:
            before_start(streams)
        # The code server and the daemon as `make run` starts them, in one process group with
        # the run workers; no webserver.
        dagster = DagsterGroup(home, env, log_dir=workdir, webserver=False)
        stack.callback(dagster.stop)
        dagster.start()
        code_server, daemon = dagster.processes["code-server"], dagster.processes["daemon"]
        sampler = stack.enter_context(RssSampler(daemon.pid, code_server.pid))
        startup = wait_for_log(
            dagster.log("daemon"),
            "Checking for new runs for sensor: payment_intake_sensor",
            daemon,
            180,
        )
        yield Stack(
            home=home,
            sandbox=sandbox,
            streams=streams,
            coordinator=config["run_coordinator"]["config"],
            roles={
                "daemon": daemon.pid,
                "code_server": code_server.pid,
                "redis": redis_server.pid,
                **sandbox.pids,
            },
            sampler=sampler,
            startup_seconds=startup,
            idle_daemon_mb=rss_mb(daemon.pid),
        )


def settled_requests(
    keys: list[str], entry_ids: list[str], found: dict[str, dict]
) -> tuple[list[tuple[float, float, str]], int]:
    """(enqueued at, settled at, run id) of each settled request, and how many failed."""
    settled, failed = [], 0
    for key, entry_id in zip(keys, entry_ids, strict=True):
        outcome = found.get(key)
        if outcome is None:
            continue
        failed += outcome.get("status") != "succeeded"
        enqueued = entry_id_key(entry_id)[0] / 1000
        settled.append((enqueued, iso_seconds(outcome["at"]), outcome.get("run_id", "")))
    return settled, failed


def stack_figures(args: argparse.Namespace, stack: Stack, cpu: dict[str, float]) -> dict:
    """What every mode reports of the stack and the sandbox, after its requests."""
    stack.sampler.sample()
    intents = count_payment_intents(stack.sandbox.stripe_direct, PIPELINE_TENANT)
    total_cpu = sum(cpu.values())
    sandbox_cpu = cpu.get("localstripe", 0) + cpu.get("smtp_sink", 0)
    return {
        "peak_rss_mb": round(stack.sampler.peak_tree_mb, 1),
        "peak_daemon_rss_mb": round(stack.sampler.peak_daemon_mb, 1),
        "idle_daemon_rss_mb": round(stack.idle_daemon_mb, 1),
        "peak_processes": stack.sampler.peak_processes,
        "duplicate_charges": sum(n - 1 for n in intents.values() if n > 1),
        "payment_intents": sum(intents.values()),
        "stream_length_at_end": stack.streams.client.xlen(stack.streams.stream_key("payment")),
        "cpu_seconds": cpu,
        "cpu_seconds_total": round(total_cpu, 2),
        "sandbox_cpu_share": round(sandbox_cpu / total_cpu, 3) if total_cpu else None,
        **run_phases(stack.home),
        **tick_figures(stack.home),
        "daemon_startup_seconds": round(stack.startup_seconds, 1),
    }


def settings_figures(args: argparse.Namespace, batch_size: int, coordinator: dict) -> dict:
    return {
        "batch_size": batch_size,
        "tenants": args.tenants,
        "latency_ms": args.latency_ms,
        "storage": "postgres" if args.postgres else "sqlite",
        "run_coordinator": {k: v for k, v in coordinator.items() if not isinstance(v, list)},
    }


def run_burst(args: argparse.Namespace, workdir: Path) -> dict:
    """N payments enqueued at once; the baseline first, on servers of its own."""
    batch_size = 1 if args.mode == "per-message" else args.batch_size
    baseline = None if args.no_baseline else baseline_on_fresh_servers(args, workdir)
    with pipeline_stack(args, workdir, batch_size) as stack:
        streams = stack.streams
        items = envelopes(PIPELINE_TENANT, args.messages, "example.com", args.tenants)
        keys = [item.request_key for item in items]
        poller = SettledPoller(streams)
        cpu_before = cpu_seconds(stack.roles)
        enqueue_started = time.time()
        entry_ids: list[str] = []
        for start in range(0, len(items), 1000):
            entry_ids += streams.enqueue_many(items[start : start + 1000])
        found = poller.wait(keys, args.timeout)
        waited = time.time() - enqueue_started
        cpu = cpu_used(cpu_before, cpu_seconds(stack.roles))

        settled, failed = settled_requests(keys, entry_ids, found)
        latencies = [at - enqueued for enqueued, at, _run_id in settled]
        # Until the last one settled; if some never did, until the wait gave up on them.
        complete = len(settled) == args.messages
        seconds = (max(at for _e, at, _r in settled) - enqueue_started) if complete else waited
        figures = {
            "messages": args.messages,
            "mode": args.mode,
            **settings_figures(args, batch_size, stack.coordinator),
            "seconds": round(seconds, 3),
            "messages_per_second": round(len(settled) / seconds, 2) if seconds else None,
            "p50_seconds": latencies and round(percentile(latencies, 0.5), 3) or None,
            "p95_seconds": latencies and round(percentile(latencies, 0.95), 3) or None,
            "max_seconds": round(max(latencies), 3) if latencies else None,
            "lost": args.messages - len(found),
            "failed": failed,
            **phase_percentiles(phases_of_requests(stack.home, settled)),
            "poller_redis_commands": poller.commands,
            **stack_figures(args, stack, cpu),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    if baseline is not None:
        figures["baseline_messages_per_second"] = baseline["messages_per_second"]
        figures["baseline_seconds"] = baseline["seconds"]
        figures["baseline_messages"] = baseline["messages"]
        figures["baseline_cpu_seconds"] = baseline["cpu_seconds"]
        if figures["messages_per_second"]:
            figures["ratio"] = round(
                figures["messages_per_second"] / baseline["messages_per_second"], 3
            )
    return figures


def wait_until_idle(home: Path, timeout: float) -> None:
    """Until no run of the instance is queued, starting or running."""
    import dagster as dg

    busy = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            if not instance.get_runs_count(dg.RunsFilter(statuses=busy)):
                return
            time.sleep(POLL_SECONDS)


def run_single(args: argparse.Namespace, workdir: Path) -> dict:
    """One request at a time on an idle stack, `args.single` times: enqueue -> settled."""
    with pipeline_stack(args, workdir, args.batch_size) as stack:
        streams = stack.streams
        poller = SettledPoller(streams, interval=0.05)
        cpu_before = cpu_seconds(stack.roles)
        settled: list[tuple[float, float, str]] = []
        pauses: list[float] = []
        lost = failed = 0
        for number in range(args.single):
            wait_until_idle(stack.home, timeout=120)
            # A fixed pause would put every request at the same distance from the evaluation
            # that requested the previous one's run; the random part spreads them over the
            # sensor daemon's loop (5 s), as requests from outside arrive.
            pauses.append(round(args.single_pause + random.uniform(0, args.single_jitter), 2))
            time.sleep(pauses[-1])
            (item,) = envelopes(PIPELINE_TENANT, 1, "example.com", first=number)
            (entry_id,) = streams.enqueue_many([item])
            found = poller.wait([item.request_key], args.timeout)
            these, these_failed = settled_requests([item.request_key], [entry_id], found)
            settled += these
            failed += these_failed
            lost += 1 - len(these)
        cpu = cpu_used(cpu_before, cpu_seconds(stack.roles))
        latencies = [round(at - enqueued, 3) for enqueued, at, _run_id in settled]
        phases = phases_of_requests(stack.home, settled)
        return {
            "mode": "single",
            "requests": args.single,
            **settings_figures(args, args.batch_size, stack.coordinator),
            "single_request_seconds": latencies,
            "single_pauses_seconds": pauses,
            "p50_seconds": round(statistics.median(latencies), 3) if latencies else None,
            "max_seconds": max(latencies) if latencies else None,
            "lost": lost,
            "failed": failed,
            **phase_percentiles(phases),
            "single_request_phases": phases,
            **stack_figures(args, stack, cpu),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def run_backlog(args: argparse.Namespace, workdir: Path) -> dict:
    """`args.backlog` payments waiting at once and none launched (the run queue's
    max_concurrent_runs at 0): the intake sensor's busy ticks while it batches them, per 1,000
    requests, and the daemon's RSS before, during and after. The backlog is enqueued before
    the code server and the daemon start, so the sensor's first evaluations find it all
    waiting: every busy tick counts (none was listening when the backlog came). No baseline,
    no payment made."""
    args.coordinator = [*(args.coordinator or []), "max_concurrent_runs=0"]
    items = envelopes(PIPELINE_TENANT, args.backlog, "example.com", args.tenants)
    enqueued: list[float] = []

    def fill(streams: IntakeStreams) -> None:
        enqueued.append(time.time())
        for start in range(0, len(items), 1000):
            streams.enqueue_many(items[start : start + 1000])

    with pipeline_stack(args, workdir, args.batch_size, before_start=fill) as stack:
        daemon = stack.roles["daemon"]
        cpu_before = cpu_seconds(stack.roles)
        # From the daemon's first evaluation of the payment sensor (pipeline_stack returns
        # once it has logged it), not from the enqueue: the stack's start is not the tick's.
        started = time.monotonic()
        rss: list[tuple[float, float]] = []  # (seconds since the first evaluation, daemon MB)
        batched, batched_after = 0, None
        # Until all are batched, then as long again (at least 10 s) of idle ticks.
        while time.monotonic() - started < args.timeout:
            rss.append((round(time.monotonic() - started, 1), round(rss_mb(daemon), 1)))
            if batched_after is None:
                batched = batched_requests(stack.home)
                elapsed = time.monotonic() - started
                if batched >= args.backlog:
                    batched_after = elapsed
            elif time.monotonic() - started > 2 * batched_after + 10:
                break
            time.sleep(1.0)
        cpu = cpu_used(cpu_before, cpu_seconds(stack.roles))
        ticks = busy_tick_sizes(stack.home, "payment_intake_sensor")
        per_thousand = [
            seconds * 1000 / size for at, seconds, size in ticks if size and at >= enqueued[0]
        ]
        during = [mb for at, mb in rss if batched_after is None or at <= batched_after]
        return {
            "mode": "backlog",
            "backlog": args.backlog,
            **settings_figures(args, args.batch_size, stack.coordinator),
            "batched": batched,
            "batched_after_seconds": batched_after and round(batched_after, 2),
            "busy_ticks": [
                {
                    "seconds": round(seconds, 3),
                    "requests": size,
                    "listened_first": at < enqueued[0],
                }
                for at, seconds, size in ticks
            ],
            "busy_tick_seconds_per_1000_p50": per_thousand
            and round(statistics.median(per_thousand), 3)
            or None,
            "busy_tick_seconds_per_1000_max": per_thousand and round(max(per_thousand), 3) or None,
            "idle_daemon_rss_mb": round(stack.idle_daemon_mb, 1),
            "daemon_rss_mb_while_batching_max": max(during) if during else None,
            "daemon_rss_mb_at_end": rss[-1][1] if rss else None,
            "daemon_rss_mb_samples": rss[:: max(1, len(rss) // 20)],
            "cpu_seconds": {role: cpu[role] for role in ("daemon", "code_server", "redis")},
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="qp-e2e-"))
    try:
        if args.backlog:
            figures = run_backlog(args, workdir)
        elif args.single:
            figures = run_single(args, workdir)
        else:
            figures = run_burst(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.keep:
        figures["workdir"] = str(workdir)
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--mode", choices=("batch", "per-message"), default="batch")
    parser.add_argument("--batch-size", type=int, default=SPECS["payment"].batch_size)
    parser.add_argument("--batch-wait", type=float, default=None, help="QP_BATCH_WAIT_PAYMENT")
    parser.add_argument(
        "--tenants", type=int, default=1, help="spread the payments over this many tenants"
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="added to every Stripe call")
    parser.add_argument(
        "--coordinator",
        action="append",
        metavar="NAME=VALUE",
        help="override a run_coordinator setting of dagster.yaml, e.g. max_concurrent_runs=8",
    )
    parser.add_argument("--postgres", metavar="URL", help="dagster-postgres storage at URL")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (default: by N)"
    )
    parser.add_argument(
        "--baseline-messages",
        type=int,
        default=None,
        help="default: N (on servers of its own, as fresh as the pipeline's)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--single",
        type=int,
        nargs="?",
        const=5,
        default=0,
        metavar="K",
        help="instead of a burst: one request at a time on an idle stack, K times (default "
        "5), and their median enqueue -> settled; no baseline",
    )
    parser.add_argument(
        "--single-pause",
        type=float,
        default=2.0,
        help="seconds of idle stack before each single request (default 2), plus a random "
        "0 to --single-jitter",
    )
    parser.add_argument(
        "--single-jitter",
        type=float,
        default=5.0,
        help="the most seconds added at random to each single request's pause (default 5, "
        "the sensor daemon's loop), so that requests come at any moment of its loop",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="N",
        help="instead of a burst: N payments enqueued before the daemon starts, none "
        "launched (max_concurrent_runs=0), until the sensor has batched them all; its busy "
        "ticks per 1,000 requests and the daemon's RSS; no baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print the JSON object only")
    parser.add_argument(
        "--smoke", action="store_true", help="CI size: 20 messages, a 300 s timeout"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.messages = min(args.messages, 20)
        args.timeout = args.timeout or 300
    if args.messages < 1 or args.batch_size < 1 or args.single < 0 or args.backlog < 0:
        parser.error(
            "--messages and --batch-size must be 1 or more, --single and --backlog 0 or more"
        )
    if args.timeout is None:
        per_message = 2.0 if args.mode == "per-message" or args.batch_size == 1 else 0.2
        args.timeout = 120 + max(args.messages, args.backlog) * per_message
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with terminated_on_sigterm():
        figures = run(args)
    if not args.json:
        what = (
            f"a backlog of {args.backlog} payments"
            if args.backlog
            else f"{args.single} single requests"
            if args.single
            else f"{args.messages} payments"
        )
        print(f"bench.e2e: {what}, {figures['mode']} mode", file=sys.stderr)
    print(json.dumps(figures, indent=None if args.json else 2))
    return 0 if not figures.get("lost") and not figures.get("duplicate_charges") else 1


if __name__ == "__main__":
    sys.exit(main())
