"""End-to-end payment bench: the whole stack as `make run` starts it, against a plain worker
loop doing the same calls, in one invocation.

    uv run --frozen python -m bench.e2e --messages 2000 --mode batch --json
    uv run --frozen python -m bench.e2e --messages 30 --mode per-message
    uv run --frozen python -m bench.e2e --messages 1000 --latency-ms 300
    uv run --frozen python -m bench.e2e --messages 200 --postgres postgresql://...

It starts, each on a free loopback port and stopped again on exit (Ctrl-C and errors too):
an embedded redis-server, localstripe (behind a delaying proxy with --latency-ms), an SMTP
sink, the code server as `make run` starts it (`dagster api grpc`, whose children are the run
workers) and a real `dagster-daemon` (run queue, sensors, run monitoring) on it; the instance
lives in a temporary DAGSTER_HOME with the project's dagster.yaml (or dagster-postgres
storage with --postgres).

It then runs the baseline (charge_once + the notifier's e-mail, as many threads as the
payment concurrency, no orchestrator), waits for the intake sensor's first tick, enqueues N
payments at once and waits until every one is settled. Latency is per request, from its
entry id (Redis' clock at enqueue) to the outcome's `at` (recorded by the run as the request
ends). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import yaml

from queue_pipelines.intake.payloads import PaymentPayload
from queue_pipelines.intake.registry import SPECS
from queue_pipelines.intake.schema import Envelope
from queue_pipelines.intake.streams import IntakeStreams, entry_id_key, redis_client
from queue_pipelines.sandbox.dev import code_server_command, write_workspace
from queue_pipelines.sandbox.servers import (
    free_port,
    start_localstripe,
    start_on_a_free_port,
    start_redis,
    stop,
    wait_for_port,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STRIPE_KEY = "sk_test_bench_e2e"
PIPELINE_TENANT = "bench-e2e"
BASELINE_TENANT = "bench-baseline"
SAMPLE_SECONDS = 0.5


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


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group `process` leads, then SIGKILL what is left of it and of its
    descendants (a run worker may have a group of its own)."""
    if process.poll() is not None and not os.path.exists(f"/proc/{process.pid}"):
        return
    stragglers = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


# ---------------------------------------------------------------------------------------------
# the stack


def write_instance_config(
    home: Path, postgres_url: str | None, coordinator: list[str] | None = None
) -> dict:
    """The project's dagster.yaml, with dagster-postgres storage and run-coordinator settings
    (`name=yaml value`) overridden where asked; returns the run coordinator's config."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    for setting in coordinator or []:
        name, _, value = setting.partition("=")
        config["run_coordinator"]["config"][name] = yaml.safe_load(value)
    if postgres_url:
        for key in ("storage", "run_storage", "event_log_storage", "schedule_storage"):
            config.pop(key, None)
        config["storage"] = {"postgres": {"postgres_url": postgres_url}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config["run_coordinator"]["config"]


def envelopes(tenant: str, count: int, email_domain: str, tenants: int = 1) -> list[Envelope]:
    """`count` payments, spread round-robin over `tenants` tenants (`tenant`, `tenant`-1 ...)."""
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
        for i in range(count)
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

    api = StripeApi(STRIPE_KEY, api_base=stripe_url, max_network_retries=0)
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


def wait_for_settled(
    streams: IntakeStreams, request_keys: list[str], timeout: float
) -> dict[str, dict]:
    """Poll Redis until every request has an outcome and the payment stream is empty (or the
    timeout passes); returns the outcomes found, by request key."""
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline and polls < int(timeout / 0.25) + 1:
        polls += 1
        missing = [key for key in request_keys if key not in found]
        pipe = streams.client.pipeline(transaction=False)
        for key in missing:
            pipe.hgetall(f"{streams.prefix}:outcome:{key}")
        for key, outcome in zip(missing, pipe.execute(), strict=True):
            if outcome:
                found[key] = outcome
        if (
            len(found) == len(request_keys)
            and streams.client.xlen(streams.stream_key("payment")) == 0
        ):
            break
        time.sleep(0.25)
    return found


def sensor_tick_durations(home: Path, name: str) -> list[float]:
    """Durations (s) of the daemon's ticks of sensor `name` that did something or skipped."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    durations = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name != name:
                continue
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
                if tick.tick_data.end_timestamp:
                    durations.append(tick.tick_data.end_timestamp - tick.timestamp)
    return durations


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


def run(args: argparse.Namespace) -> dict:
    from queue_pipelines.sandbox.outbox import start_sink

    batch_size = 1 if args.mode == "per-message" else args.batch_size
    workdir = Path(tempfile.mkdtemp(prefix="qp-e2e-"))
    home = workdir / "home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        # Redis and localstripe
        redis_port, redis_server = start_on_a_free_port(
            lambda p: start_redis(p, None, workdir / "redis.log")
        )
        stack.callback(stop, redis_server)
        # Idempotency-Key ignored, so that `duplicate_charges` counts what the project's own
        # ledger let through, not what the sandbox's idempotency cache hid.
        stripe_port, localstripe = start_on_a_free_port(
            lambda p: start_localstripe(p, workdir / "localstripe.log", idempotency=False)
        )
        stack.callback(stop, localstripe)
        stripe_direct = f"http://127.0.0.1:{stripe_port}"
        stripe_url = stripe_direct
        if args.latency_ms:
            from queue_pipelines.sandbox.relay import Relay

            proxy = Relay(stripe_direct, delay_seconds=args.latency_ms / 1000).start()
            stack.callback(proxy.stop)
            stripe_url = proxy.url
        smtp_port = free_port()
        sink = start_sink(workdir / "outbox", smtp_port)
        stack.callback(sink.stop)

        baseline = None
        if not args.no_baseline:
            baseline = run_baseline(
                stripe_url, smtp_port, workdir, args.baseline_messages or min(args.messages, 500)
            )

        prefix = f"qpe2e{uuid.uuid4().hex[:6]}"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        coordinator = write_instance_config(home, args.postgres, args.coordinator)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "REDIS_URL": redis_url,
            "QUEUE_KEY_PREFIX": prefix,
            "STRIPE_API_BASE": stripe_url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_SECURITY": "none",
            "QP_BATCH_SIZE_PAYMENT": str(batch_size),
        }
        if args.batch_wait is not None:
            env["QP_BATCH_WAIT_PAYMENT"] = str(args.batch_wait)
        for name in ("STRIPE_SECRET_KEY", "DAGSTER_POSTGRES_URL", "SOLANA_RPC_URL"):
            env.pop(name, None)
        # The code server as `make run` starts it; run workers are its children.
        code_server_port = free_port()
        with open(workdir / "code-server.log", "ab") as log:
            code_server = subprocess.Popen(
                code_server_command(code_server_port),
                env=env,
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_group, code_server)
        wait_for_port(code_server_port, code_server, "the code server", timeout=180)
        workspace = write_workspace(home, code_server_port)
        daemon_log = workdir / "daemon.log"
        with open(daemon_log, "ab") as log:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                env=env,
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        stack.callback(stop_group, daemon)
        sampler = stack.enter_context(RssSampler(daemon.pid, code_server.pid))
        startup = wait_for_log(
            daemon_log, "Checking for new runs for sensor: payment_intake_sensor", daemon, 180
        )
        idle_daemon_mb = rss_mb(daemon.pid)

        streams = IntakeStreams(redis_client(redis_url), prefix)
        items = envelopes(PIPELINE_TENANT, args.messages, "example.com", args.tenants)
        enqueue_started = time.time()
        entry_ids: list[str] = []
        for start in range(0, len(items), 1000):
            entry_ids += streams.enqueue_many(items[start : start + 1000])
        keys = [item.request_key for item in items]
        found = wait_for_settled(streams, keys, args.timeout)
        waited = time.time() - enqueue_started

        latencies, settled_at, failed = [], [], 0
        for key, entry_id in zip(keys, entry_ids, strict=True):
            outcome = found.get(key)
            if outcome is None:
                continue
            failed += outcome.get("status") != "succeeded"
            at = iso_seconds(outcome["at"])
            settled_at.append(at)
            latencies.append(at - entry_id_key(entry_id)[0] / 1000)
        # Until the last one settled; if some never did, until the wait gave up on them.
        complete = len(settled_at) == args.messages
        seconds = (max(settled_at) - enqueue_started) if complete else waited
        sampler.sample()
        intents = count_payment_intents(stripe_direct, PIPELINE_TENANT)
        ticks = sensor_tick_durations(home, "payment_intake_sensor")
        phases = run_phases(home)

        figures = {
            "messages": args.messages,
            "mode": args.mode,
            "batch_size": batch_size,
            "tenants": args.tenants,
            "latency_ms": args.latency_ms,
            "storage": "postgres" if args.postgres else "sqlite",
            "run_coordinator": {k: v for k, v in coordinator.items() if not isinstance(v, list)},
            "seconds": round(seconds, 3),
            "messages_per_second": round(len(settled_at) / seconds, 2) if seconds else None,
            "p50_seconds": latencies and round(percentile(latencies, 0.5), 3) or None,
            "p95_seconds": latencies and round(percentile(latencies, 0.95), 3) or None,
            "max_seconds": round(max(latencies), 3) if latencies else None,
            "peak_rss_mb": round(sampler.peak_tree_mb, 1),
            "peak_daemon_rss_mb": round(sampler.peak_daemon_mb, 1),
            "idle_daemon_rss_mb": round(idle_daemon_mb, 1),
            "peak_processes": sampler.peak_processes,
            "lost": args.messages - len(found),
            "failed": failed,
            "duplicate_charges": sum(n - 1 for n in intents.values() if n > 1),
            "payment_intents": sum(intents.values()),
            "stream_length_at_end": streams.client.xlen(streams.stream_key("payment")),
            **phases,
            "sensor_ticks": len(ticks),
            "sensor_tick_p50_ms": round(statistics.median(ticks) * 1000, 1) if ticks else None,
            "sensor_tick_max_ms": round(max(ticks) * 1000, 1) if ticks else None,
            "daemon_startup_seconds": round(startup, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if baseline is not None:
            figures["baseline_messages_per_second"] = baseline["messages_per_second"]
            figures["baseline_seconds"] = baseline["seconds"]
            figures["baseline_messages"] = baseline["messages"]
            if figures["messages_per_second"]:
                figures["ratio"] = round(
                    figures["messages_per_second"] / baseline["messages_per_second"], 3
                )
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
        help="default: N, at most 500 (its rate is steady by then)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print the JSON object only")
    parser.add_argument(
        "--smoke", action="store_true", help="CI size: 20 messages, a 300 s timeout"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.messages = min(args.messages, 20)
        args.timeout = args.timeout or 300
    if args.messages < 1 or args.batch_size < 1:
        parser.error("--messages and --batch-size must be 1 or more")
    if args.timeout is None:
        per_message = 2.0 if args.mode == "per-message" or args.batch_size == 1 else 0.2
        args.timeout = 120 + args.messages * per_message
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with terminated_on_sigterm():
        figures = run(args)
    if not args.json:
        print(f"bench.e2e: {args.messages} payments, {args.mode} mode", file=sys.stderr)
    print(json.dumps(figures, indent=None if args.json else 2))
    return 0 if figures["lost"] == 0 and figures["duplicate_charges"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
