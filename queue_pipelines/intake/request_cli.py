"""`queue-pipelines request show KEY`: where one request is and what became of it."""

from __future__ import annotations

import argparse
import json

from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.intake.text_fields import escape_controls

# Dead letters are a stream, newest last: how far back `request show` looks for this request's.
DEAD_LETTER_SCAN = 10_000


def add_request_parser(commands: argparse._SubParsersAction) -> None:
    request = commands.add_parser(
        "request",
        help="one request: which batch (run) has it and what became of it",
        description="A request is known by its key, TYPE:TENANT:IDEMPOTENCY_KEY (as "
        "`enqueue --json` prints it). Shows its outcome and the run that recorded it, the "
        "batch it is in flight in (the run key; filter the Runs page by tag queue/batch), "
        "its entries still on the intake, and its dead letters.",
    )
    actions = request.add_subparsers(dest="request_command", required=True)
    show = actions.add_parser("show", help="show one request")
    show.add_argument("key", help="TYPE:TENANT:IDEMPOTENCY_KEY")
    show.add_argument("--json", action="store_true")


def request_report(intake: IntakeStreams, request_key: str) -> dict:
    outcome = intake.outcomes([request_key]).get(request_key)
    assignment = intake.assignments([request_key]).get(request_key)
    letters = [
        {k: letter.get(k) for k in ("id", "entry_id", "reason", "run_id", "dead_lettered_at")}
        for letter in intake.dead_letters(DEAD_LETTER_SCAN)
        if letter.get("request_key") == request_key
    ]
    return {
        "request_key": request_key,
        "outcome": None if outcome is None else vars(outcome),
        "in_flight": None
        if assignment is None
        else {"batch": assignment.batch_key, "attempt": assignment.attempt},
        "waiting_entries": intake.waiting_entries(request_key),
        "dead_letters": letters,
    }


def run_request(intake: IntakeStreams, args: argparse.Namespace, out) -> int:
    if args.key.count(":") < 2:
        print(f"error: {args.key!r} is not TYPE:TENANT:IDEMPOTENCY_KEY", file=out)
        return 2
    report = request_report(intake, args.key)
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return 0
    known = report["outcome"] or report["in_flight"] or report["waiting_entries"]
    if not known and not report["dead_letters"]:
        print(
            f"{args.key}: not known here (never enqueued, or settled over a week ago: the "
            "effect ledger still holds what it did)",
            file=out,
        )
        return 1
    print(args.key, file=out)
    if report["outcome"]:
        o = report["outcome"]
        reason = f": {escape_controls(o['reason'])}" if o["reason"] else ""
        print(
            f"  outcome: {escape_controls(o['status'])} in run {o['run_id'] or '-'}{reason}",
            file=out,
        )
    if report["in_flight"]:
        f = report["in_flight"]
        print(f"  in flight: batch {f['batch']} (run key; attempt {f['attempt']})", file=out)
    if report["waiting_entries"]:
        print(f"  entries on the intake: {', '.join(report['waiting_entries'])}", file=out)
    for letter in report["dead_letters"]:
        print(
            f"  dead letter {letter['id']} ({escape_controls(str(letter['dead_lettered_at']))}): "
            f"{escape_controls(str(letter['reason']))}",
            file=out,
        )
    return 0
