"""`queue-pipelines dlq list|show|replay|purge`: the dead letters from a shell.

`queue-pipelines queue dead-letters` is kept as an alias of `dlq list`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from queue_pipelines.intake.dead_letters import (
    DeadLetterFilter,
    ReplayError,
    find_dead_letters,
    get_dead_letter,
    parse_duration,
    remove_dead_letters,
    replay_dead_letter,
)
from queue_pipelines.intake.schema import JOB_TYPES
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.intake.text_fields import escape_controls


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all must match)")
    group.add_argument("--type", dest="job_type", choices=JOB_TYPES, help="job type")
    group.add_argument("--tenant", help="tenant id")
    group.add_argument("--reason", help="substring of the reason, case-insensitive")
    group.add_argument(
        "--older-than", type=_duration, metavar="AGE", help="dead-lettered at least AGE ago (15m)"
    )
    group.add_argument(
        "--newer-than", type=_duration, metavar="AGE", help="dead-lettered at most AGE ago (2h)"
    )


def add_dlq_parser(commands: argparse._SubParsersAction) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="dead letters: list, show, replay, purge",
        description="Requests that were rejected or whose run failed for good, with the reason. "
        "A replay puts the original envelope (same idempotency key) back on its stream: a "
        "request that had succeeded meanwhile is acked, not charged again.",
    )
    sub = dlq.add_subparsers(dest="dlq_command", required=True)

    listing = sub.add_parser("list", help="dead letters, newest first")
    add_filter_arguments(listing)
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    listing.add_argument("--json", action="store_true", help="JSON, with the original entries")

    show = sub.add_parser("show", help="one dead letter, with its original entry")
    show.add_argument("id", help="the dead letter's id (from `dlq list`)")
    show.add_argument("--json", action="store_true")

    replay = sub.add_parser(
        "replay",
        help="re-enqueue dead letters with their original idempotency key",
        description="Re-enqueue the given dead letters, or those matching the filters, and "
        "remove them from the dead-letter stream.",
    )
    replay.add_argument("ids", nargs="*", help="dead letter ids; or use filters")
    add_filter_arguments(replay)
    replay.add_argument(
        "--payload",
        help="JSON object merged into the payload before it is validated again (one id only): "
        "replay a request fixed by hand",
    )
    replay.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    replay.add_argument("--json", action="store_true")

    purge = sub.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("ids", nargs="*", help="dead letter ids; or use filters")
    add_filter_arguments(purge)
    purge.add_argument("--all", action="store_true", help="every dead letter (no filter given)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--json", action="store_true")


def _filter_of(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        job_type=args.job_type,
        tenant=args.tenant,
        reason=args.reason,
        older_than_seconds=args.older_than,
        newer_than_seconds=args.newer_than,
    )


def _has_filter(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, name) is not None
        for name in ("job_type", "tenant", "reason", "older_than", "newer_than")
    )


def _public(letter: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in letter.items() if k != "dead_lettered_ms"}


def _text(value: Any) -> str:
    """A letter's value as it may go to a terminal: letters hold what producers wrote, and
    an ESC there would be a terminal escape sequence; JSON output escapes on its own."""
    return escape_controls(str(value))


def _line(letter: dict[str, Any]) -> str:
    run = f" run {_text(letter['run_id'])}" if letter.get("run_id") else ""
    who = f" {_text(letter['tenant_id'])}" if letter.get("tenant_id") else ""
    first = (
        f"{letter['id']}  {_text(letter.get('dead_lettered_at', ''))}  "
        f"{_text(letter.get('job_type') or '?')}{who} entry "
        f"{_text(letter.get('entry_id', '?'))}{run}"
    )
    if letter.get("malformed"):
        return f"{first}\n    malformed dead letter: {_text(letter['malformed'])}"
    return f"{first}\n    {_text(letter.get('reason', ''))}"


def print_letters(letters: list[dict[str, Any]], as_json: bool, out) -> None:
    if as_json:
        print(json.dumps([_public(letter) for letter in letters], indent=2), file=out)
        return
    if not letters:
        print("no dead letters", file=out)
    for letter in letters:
        print(_line(letter), file=out)


def _confirm(question: str, stdin, err) -> bool:
    print(f"{question} [y/N] ", end="", file=err, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _select(intake: IntakeStreams, args: argparse.Namespace, err) -> list[dict] | None:
    """The dead letters named by id, or matching the filters; None after reporting an error."""
    if args.ids:
        if _has_filter(args):
            print("error: give dead letter ids or filters, not both", file=err)
            return None
        letters = []
        for letter_id in args.ids:
            letter = get_dead_letter(intake, letter_id)
            if letter is None:
                print(f"error: no dead letter {_text(letter_id)}", file=err)
                return None
            letters.append(letter)
        return letters
    if not _has_filter(args) and not getattr(args, "all", False):
        what = "--all" if hasattr(args, "all") else "a filter"
        print(f"error: give dead letter ids, filters, or {what}", file=err)
        return None
    return find_dead_letters(intake, _filter_of(args))


def run_dlq(intake: IntakeStreams, args: argparse.Namespace, out, err, stdin=None) -> int:
    stdin = stdin or sys.stdin
    command = args.dlq_command
    if command == "list":
        print_letters(find_dead_letters(intake, _filter_of(args), args.limit), args.json, out)
        return 0
    if command == "show":
        letter = get_dead_letter(intake, args.id)
        if letter is None:
            print(f"error: no dead letter {_text(args.id)}", file=err)
            return 1
        if args.json:
            print(json.dumps(_public(letter), indent=2), file=out)
        else:
            print(_line(letter), file=out)
            for key in ("stream", "entry_id", "request_key", "run_id"):
                if letter.get(key):
                    print(f"    {key}: {_text(letter[key])}", file=out)
            # json.dumps writes every character outside ASCII as an escape.
            print(f"    fields: {json.dumps(letter['fields'], indent=2)}", file=out)
        return 0

    letters = _select(intake, args, err)
    if letters is None:
        return 2
    if not letters:
        print(json.dumps([]) if args.json else "no dead letters match", file=out)
        return 0
    changes = None
    if command == "replay" and args.payload:
        if len(letters) != 1:
            print("error: --payload replays exactly one dead letter", file=err)
            return 2
        try:
            changes = json.loads(args.payload)
        except ValueError as exc:
            print(f"error: --payload is not JSON: {exc}", file=err)
            return 2
        if not isinstance(changes, dict):
            print("error: --payload must be a JSON object", file=err)
            return 2
    verb = "replay" if command == "replay" else "purge for good"
    if not args.yes and not _confirm(f"{verb} {len(letters)} dead letter(s)?", stdin, err):
        print("nothing done", file=err)
        return 1

    if command == "purge":
        removed = remove_dead_letters(intake, letters)
        if args.json:
            print(json.dumps({"purged": removed}), file=out)
        else:
            print(f"purged {removed} dead letter(s)", file=out)
        return 0

    replayed, failed = [], 0
    for letter in letters:
        try:
            entry_id, request_key = replay_dead_letter(intake, letter, changes)
        except ReplayError as exc:
            failed += 1
            print(f"error: {_text(exc)}", file=err)
            continue
        replayed.append(
            {"dead_letter": letter["id"], "entry_id": entry_id, "request_key": request_key}
        )
        if not args.json:
            print(f"replayed {letter['id']} as entry {entry_id} ({_text(request_key)})", file=out)
    if args.json:
        print(json.dumps({"replayed": replayed, "failed": failed}, indent=2), file=out)
    return 1 if failed else 0
