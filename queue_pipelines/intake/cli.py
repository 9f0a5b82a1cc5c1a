"""`queue-pipelines enqueue` and `queue-pipelines queue`: the intake from a shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.dlq_cli import add_filter_arguments, run_dlq
from queue_pipelines.intake.registry import JOB_TYPES
from queue_pipelines.intake.request_cli import EffectLookup, print_report, request_report
from queue_pipelines.intake.schema import Envelope, EnvelopeError, envelope_from_dict, json_schema
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.intake.text_fields import escape_controls

FILE_BATCH = 500
DEFAULT_WAIT_SECONDS = 120.0
WAIT_POLL_SECONDS = 0.25
# `enqueue --wait` exits 0 when the request succeeded, 1 when it failed for good (dead-lettered),
# 2 on bad input (as without --wait), and this when it had not settled within --timeout.
EXIT_TIMED_OUT = 3


def add_enqueue_parser(commands: argparse._SubParsersAction) -> None:
    enqueue = commands.add_parser(
        "enqueue",
        help="put job requests on the intake",
        description="Validate job requests and append them to their intake stream. Either "
        "one request (TYPE and flags) or a JSON Lines file of envelopes (--file).",
    )
    enqueue.add_argument("type", nargs="?", choices=JOB_TYPES, help="job type of one request")
    enqueue.add_argument(
        "--file",
        type=Path,
        help="JSON Lines file, one envelope per line (docs/intake.md); '-' reads stdin",
    )
    enqueue.add_argument("--tenant", default="demo", help="tenant id (default: demo)")
    enqueue.add_argument(
        "--key", help="idempotency key; repeat it to make a retry safe (default: a new UUID)"
    )
    enqueue.add_argument(
        "--priority",
        type=int,
        default=0,
        help="-100..100, higher runs first (the operator's whole range; a tenant's token at "
        "the gateway gets the range the operator set, default -100..0)",
    )
    enqueue.add_argument("--payload", help="the payload as JSON; flags below override its fields")
    enqueue.add_argument(
        "--wait",
        action="store_true",
        help="wait until the request has settled and print its outcome, as `request show` "
        "does: the PaymentIntent, refund, mint or customer with its status and amount, or the "
        "reason it failed. Exit code 0 succeeded, 1 failed for good (dead-lettered), "
        f"{EXIT_TIMED_OUT} not settled within --timeout (it goes on; look again with "
        "`request show`)",
    )
    enqueue.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"how long --wait waits (default {DEFAULT_WAIT_SECONDS:.0f})",
    )
    group = enqueue.add_argument_group("payment and refund fields")
    group.add_argument("--order-id")
    group.add_argument("--amount", type=int, help="in the currency's smallest unit (cents)")
    group.add_argument("--currency", help="ISO 4217 code, e.g. usd (payment)")
    group.add_argument(
        "--email", dest="customer_email", help="buyer's e-mail (payment; customer: its e-mail)"
    )
    group.add_argument(
        "--name", dest="customer_name", help="buyer's name (payment; customer: its name)"
    )
    group.add_argument(
        "--payment-method", help="Stripe PaymentMethod id (payment; sandbox: pm_card_visa)"
    )
    group.add_argument("--description", help="statement description (payment)")
    group.add_argument("--payment-intent", dest="payment_intent_id", help="pi_... (refund)")
    group.add_argument(
        "--reason", choices=["duplicate", "fraudulent", "requested_by_customer"], help="(refund)"
    )
    group = enqueue.add_argument_group("mint fields (and --order-id, --payload for the rest)")
    group.add_argument("--wallet", help="the buyer's wallet, base58 (mint)")
    group = enqueue.add_argument_group("transfer fields (and --order-id)")
    group.add_argument("--mint", help="the ticket's mint address, base58")
    group.add_argument("--to-wallet", help="the new owner's wallet, base58")
    group.add_argument(
        "--from-wallet", help="the seller's wallet, base58: refused if someone else holds it"
    )
    group = enqueue.add_argument_group(
        "customer fields (and --email, --name; --payload for metadata)"
    )
    group.add_argument("--action", choices=["create", "update", "delete"])
    group.add_argument(
        "--customer", dest="customer_id", help="the Stripe customer, cus_... (update, delete)"
    )
    enqueue.add_argument("--json", action="store_true", help="print the result as JSON")


def add_queue_parser(commands: argparse._SubParsersAction) -> None:
    queue = commands.add_parser("queue", help="inspect the intake streams")
    sub = queue.add_subparsers(dest="queue_command", required=True)
    stats = sub.add_parser(
        "stats",
        help="per stream: length, pending, the oldest pending and waiting request's age; per "
        "tenant: how many wait and the oldest's age; the dead-letter count",
    )
    stats.add_argument("--json", action="store_true")
    letters = sub.add_parser(
        "dead-letters",
        help="alias of `dlq list`: the newest dead letters and their reasons (--json adds the "
        "original entries)",
    )
    add_filter_arguments(letters)
    letters.add_argument("--limit", type=int, default=20)
    letters.add_argument("--json", action="store_true")


_FIELD_FLAGS = (
    "order_id",
    "amount",
    "currency",
    "customer_email",
    "customer_name",
    "payment_method",
    "description",
    "payment_intent_id",
    "reason",
    "wallet",
    "mint",
    "to_wallet",
    "from_wallet",
    "action",
    "customer_id",
)
# Flags whose field has another name in a type's payload: a customer's own e-mail and name.
_FIELD_NAMES = {"customer": {"customer_email": "email", "customer_name": "name"}}


def _payload_from_args(args: argparse.Namespace) -> dict[str, Any]:
    payload = json.loads(args.payload) if args.payload else {}
    if not isinstance(payload, dict):
        raise EnvelopeError("--payload must be a JSON object")
    names = _FIELD_NAMES.get(args.type, {})
    for name in _FIELD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            payload[names.get(name, name)] = value
    return payload


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def enqueue_file(intake: IntakeStreams, path: Path, out, err) -> int:
    """Enqueue every valid line; report each rejected one by line number."""
    accepted, rejected, batch = 0, 0, []
    for number, line in _read_lines(path):
        try:
            batch.append(envelope_from_dict(json.loads(line)))
        except json.JSONDecodeError as exc:
            rejected += 1
            print(f"{path}:{number}: invalid JSON: {exc}", file=err)
        except EnvelopeError as exc:
            rejected += 1
            print(f"{path}:{number}: {exc.reason}", file=err)
        if len(batch) >= FILE_BATCH:
            accepted += len(intake.enqueue_many(batch))
            batch.clear()
            print(f"... {accepted} enqueued so far", file=err)
    if batch:
        accepted += len(intake.enqueue_many(batch))
    print(f"enqueued {accepted}, rejected {rejected}", file=out)
    return 1 if rejected else 0


def run_enqueue(
    intake: IntakeStreams,
    args: argparse.Namespace,
    out,
    err,
    effect_of: EffectLookup | None = None,
) -> int:
    if args.file is not None:
        if args.type:
            print("error: give either TYPE with flags or --file, not both", file=err)
            return 2
        if args.wait:
            print("error: --wait waits for one request: give TYPE with flags", file=err)
            return 2
        return enqueue_file(intake, args.file, out, err)
    if args.timeout <= 0:
        print("error: --timeout must be more than 0 seconds", file=err)
        return 2
    if not args.type:
        print(f"error: give a job TYPE ({', '.join(JOB_TYPES)}) or --file", file=err)
        return 2
    try:
        envelope = envelope_from_dict(
            {
                "type": args.type,
                "version": 1,
                "tenant_id": args.tenant,
                "idempotency_key": args.key or str(uuid.uuid4()),
                "priority": args.priority,
                "payload": _payload_from_args(args),
            }
        )
    except (EnvelopeError, json.JSONDecodeError) as exc:
        print(f"error: {getattr(exc, 'reason', exc)}", file=err)
        return 2
    entry_id = intake.enqueue(envelope)
    if args.wait:
        return wait_and_report(intake, envelope, entry_id, args, out, err, effect_of)
    if args.json:
        print(json.dumps({"entry_id": entry_id, "request_key": envelope.request_key}), file=out)
    else:
        print(_enqueued_line(intake, envelope, entry_id), file=out)
    return 0


def _enqueued_line(intake: IntakeStreams, envelope: Envelope, entry_id: str) -> str:
    summary = ""
    amount = getattr(envelope.payload, "amount", None)
    currency = getattr(envelope.payload, "currency", None)
    if amount is not None and currency:
        summary = f" for {format_amount(amount, currency)}"
    return (
        f"enqueued {envelope.type} {envelope.idempotency_key!r}{summary} "
        f"as entry {entry_id} on {intake.stream_key(envelope.type)}"
    )


def wait_for_settlement(
    intake: IntakeStreams, job_type: str, entry_id: str, timeout: float
) -> tuple[bool, dict | None]:
    """Wait until the entry has left the intake, which it does when its request is settled:
    acked once it succeeded, or moved to the dead letters with the reason (the request
    failed for good, or the entry itself was rejected, e.g. its key was first used for
    another payload). Returns whether it left within `timeout` seconds, and the dead letter
    it became, if it did."""
    deadline = time.monotonic() + timeout
    while intake.entry_on_intake(job_type, entry_id):
        if time.monotonic() >= deadline:
            return False, None
        time.sleep(WAIT_POLL_SECONDS)
    found = intake.dead_letter_of_entry(job_type, entry_id)
    if found is None:
        return True, None
    letter_id, fields = found
    return True, {
        "id": letter_id,
        **{k: fields.get(k) for k in ("entry_id", "reason", "run_id", "dead_lettered_at")},
    }


def wait_and_report(
    intake: IntakeStreams,
    envelope: Envelope,
    entry_id: str,
    args: argparse.Namespace,
    out,
    err,
    effect_of: EffectLookup | None,
) -> int:
    key = envelope.request_key
    if not args.json:
        print(_enqueued_line(intake, envelope, entry_id), file=out)
        print(
            f"waiting up to {args.timeout:g} s for {key} to settle (Ctrl-C stops the "
            "waiting, not the request)",
            file=err,
            flush=True,
        )
    try:
        left, letter = wait_for_settlement(intake, envelope.type, entry_id, args.timeout)
    except KeyboardInterrupt:
        print(f"stopped waiting; the request goes on: `request show {key}`", file=err)
        return 130
    report = request_report(intake, key, effect_of)
    if letter is not None and letter["id"] not in {d["id"] for d in report["dead_letters"]}:
        # Rejected as an entry (not the request's own failure): listed under no request key.
        report["dead_letters"].append(letter)
    outcome = report["outcome"]
    if not left:
        status, code = "waiting", EXIT_TIMED_OUT
    elif letter is not None or (outcome and outcome["status"] != "succeeded"):
        status, code = "failed", 1
    elif outcome is None:
        # The entry left the intake without a run settling it: deleted by hand (XDEL).
        status, code = "gone", 1
    else:
        status, code = "succeeded", 0
    if args.json:
        print(json.dumps({"entry_id": entry_id, "status": status, **report}), file=out)
        return code
    print_report(report, out)
    if status == "waiting":
        print(
            f"not settled within {args.timeout:g} s; it goes on: look again with "
            f"`request show {key}`",
            file=err,
        )
    elif status == "gone":
        print(f"entry {entry_id} left the intake with no outcome recorded for it", file=err)
    return code


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_queue(intake: IntakeStreams, args: argparse.Namespace, out) -> int:
    if args.queue_command == "stats":
        stats = intake.stats()
        if args.json:
            print(json.dumps(stats.as_dict(), indent=2), file=out)
            return 0
        print(
            f"{'stream':<14}{'length':>8}{'pending':>9}{'undelivered':>13}"
            f"{'oldest pending':>16}{'oldest waiting':>16}",
            file=out,
        )
        for s in stats.streams:
            print(
                f"{s.job_type:<14}{s.length:>8}{s.pending:>9}{s.undelivered:>13}"
                f"{_age(s.oldest_pending_age_seconds):>16}{_age(s.oldest_waiting_age_seconds):>16}",
                file=out,
            )
        waiting = [
            (s.job_type, t, w, s.tenants_complete)
            for s in stats.streams
            for t, w in sorted(s.tenants.items())
        ]
        if waiting:
            print(f"\n{'waiting by tenant':<30}{'requests':>10}{'oldest':>12}", file=out)
            for job_type, tenant, w, complete in waiting:
                more = "" if complete else "+"
                # The tenant is as an entry names it, before validation: escaped.
                print(
                    f"{job_type + ' ' + escape_controls(tenant):<30}{str(w.waiting) + more:>10}"
                    f"{_age(w.oldest_age_seconds):>12}",
                    file=out,
                )
        print(f"dead letters: {stats.dead_letters}", file=out)
        return 0
    # `queue dead-letters` is `dlq list` under its old name.
    args.dlq_command = "list"
    return run_dlq(intake, args, out, sys.stderr)


def print_schema(out) -> int:
    print(json.dumps(json_schema(), indent=2), file=out)
    return 0
