"""`queue-pipelines request show KEY`: where one request is and what became of it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from queue_pipelines.currencies import format_amount
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.intake.text_fields import escape_controls

# Dead letters are a stream, newest last: how far back `request show` looks for this request's.
DEAD_LETTER_SCAN = 10_000

# request key -> what its effect recorded in the effect ledger (a PaymentIntent, a refund, a
# mint, a transfer), or None; RuntimeError when the ledger cannot be read. The CLI passes
# queue_pipelines.request_effects.RecordedEffects: the intake does not import the ledger.
EffectLookup = Callable[[str], dict[str, Any] | None]

# A recorded effect's fields, the ids an operator needs next first; the others follow in the
# order the ledger keeps them. Amounts are shown in their currency.
LEAD_FIELDS = ("refund_id", "payment_intent_id", "mint", "status", "amount")
AMOUNT_FIELDS = ("amount", "remaining")


def add_request_parser(commands: argparse._SubParsersAction) -> None:
    request = commands.add_parser(
        "request",
        help="one request: which batch (run) has it and what became of it",
        description="A request is known by its key, TYPE:TENANT:IDEMPOTENCY_KEY (as "
        "`enqueue --json` prints it). Shows its outcome and the run that recorded it, what "
        "its effect recorded in the effect ledger (PaymentIntent, refund, mint, transfer or "
        "customer: ids, status, amount), the batch it is in flight in (the run key; filter the Runs "
        "page by tag queue/batch), its entries still on the intake, and its dead letters.",
    )
    actions = request.add_subparsers(dest="request_command", required=True)
    show = actions.add_parser("show", help="show one request")
    show.add_argument("key", help="TYPE:TENANT:IDEMPOTENCY_KEY")
    show.add_argument("--json", action="store_true")


def request_report(
    intake: IntakeStreams, request_key: str, effect_of: EffectLookup | None = None
) -> dict:
    outcome = intake.outcomes([request_key]).get(request_key)
    assignment = intake.assignments([request_key]).get(request_key)
    letters = [
        {k: letter.get(k) for k in ("id", "entry_id", "reason", "run_id", "dead_lettered_at")}
        for letter in intake.dead_letters(DEAD_LETTER_SCAN)
        if letter.get("request_key") == request_key
    ]
    effect, effect_error = None, None
    if effect_of is not None:
        try:
            effect = effect_of(request_key)
        except RuntimeError as exc:
            effect_error = str(exc)
    return {
        "request_key": request_key,
        "outcome": None if outcome is None else vars(outcome),
        "effect": effect,
        **({"effect_error": effect_error} if effect_error else {}),
        "in_flight": None
        if assignment is None
        else {"batch": assignment.batch_key, "attempt": assignment.attempt},
        "waiting_entries": intake.waiting_entries(request_key),
        "dead_letters": letters,
    }


def effect_lines(effect: dict[str, Any]) -> list[str]:
    """`field: value` for each field of a recorded effect, amounts in their currency."""
    currency = effect.get("currency")
    fields = [f for f in LEAD_FIELDS if f in effect]
    fields += [f for f in effect if f not in fields and f != "currency"]
    lines = []
    for field in fields:
        value = effect[field]
        if field in AMOUNT_FIELDS and isinstance(value, int) and isinstance(currency, str):
            shown = format_amount(value, currency)
        else:
            shown = "-" if value is None else str(value)
        lines.append(f"{field}: {escape_controls(shown)}")
    return lines


def known(report: dict) -> bool:
    return bool(
        report["outcome"]
        or report["effect"]
        or report["in_flight"]
        or report["waiting_entries"]
        or report["dead_letters"]
    )


def print_report(report: dict, out) -> None:
    """The report as `request show` prints it: the outcome first (status, run, reason), then
    what the effect ledger recorded (the provider's ids, status and amount), then where the
    request still is, then its dead letters."""
    print(report["request_key"], file=out)
    if report["outcome"]:
        o = report["outcome"]
        reason = f": {escape_controls(o['reason'])}" if o["reason"] else ""
        print(
            f"  outcome: {escape_controls(o['status'])} in run {o['run_id'] or '-'}{reason}",
            file=out,
        )
    for line in effect_lines(report["effect"] or {}):
        print(f"  {line}", file=out)
    if report.get("effect_error"):
        print(f"  ({escape_controls(report['effect_error'])})", file=out)
    if report["in_flight"]:
        # Settled, its batch is in flight until the next sensor tick sees the run ended.
        f = report["in_flight"]
        where = "batch" if report["outcome"] else "in flight: batch"
        print(f"  {where} {f['batch']} (run key; attempt {f['attempt']})", file=out)
    if report["waiting_entries"]:
        print(f"  entries on the intake: {', '.join(report['waiting_entries'])}", file=out)
    for letter in report["dead_letters"]:
        print(
            f"  dead letter {letter['id']} ({escape_controls(str(letter['dead_lettered_at']))}): "
            f"{escape_controls(str(letter['reason']))}",
            file=out,
        )


def run_request(
    intake: IntakeStreams, args: argparse.Namespace, out, effect_of: EffectLookup | None = None
) -> int:
    if args.key.count(":") < 2:
        print(f"error: {args.key!r} is not TYPE:TENANT:IDEMPOTENCY_KEY", file=out)
        return 2
    report = request_report(intake, args.key, effect_of)
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return 0
    if not known(report):
        ledger = report.get("effect_error") or "nor in the effect ledger"
        print(
            f"{args.key}: not known here (never enqueued, or settled over a week ago; "
            f"{escape_controls(ledger)})",
            file=out,
        )
        return 1
    print_report(report, out)
    return 0
