"""`queue-pipelines outbox`: the mails the local SMTP sink of `make run` kept."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from queue_pipelines import settings
from queue_pipelines.sandbox.outbox import find_message, list_messages, parse


def add_outbox_parser(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser(
        "outbox",
        help="list or print the mails kept by the local SMTP sink (make run without SMTP_HOST)",
        description="The local SMTP sink keeps each message under DAGSTER_HOME/outbox. "
        "Without a subcommand: list them.",
    )
    outbox.add_argument("--dir", help="outbox directory (default: DAGSTER_HOME/outbox)")
    sub = outbox.add_subparsers(dest="outbox_command")
    listing = sub.add_parser("list", help="one line per message, oldest first")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="print one message")
    show.add_argument("message", help="number in the listing, file name, or a prefix of it")
    part = show.add_mutually_exclusive_group()
    part.add_argument("--html", action="store_true", help="print the HTML part only")
    part.add_argument("--raw", action="store_true", help="print the message as received")


def run_outbox(args: argparse.Namespace, out, err) -> int:
    directory = Path(args.dir) if args.dir else settings.load().outbox_dir
    if args.outbox_command == "show":
        try:
            path = find_message(directory, args.message)
        except LookupError as exc:
            print(f"error: {exc}", file=err)
            return 1
        raw = path.read_bytes()
        if args.raw:
            print(raw.decode(errors="replace"), file=out)
            return 0
        message = parse(raw)
        if not args.html:
            for header in ("From", "To", "Reply-To", "Subject", "Date", "Message-ID"):
                if message.get(header):
                    print(f"{header}: {message[header]}", file=out)
            print(file=out)
        body = message.get_body(preferencelist=("html",) if args.html else ("plain",))
        print(body.get_content() if body else "(no such part)", file=out)
        return 0
    entries = list_messages(directory)
    if getattr(args, "json", False):
        print(json.dumps([vars(e) for e in entries], indent=2), file=out)
        return 0
    if not entries:
        print(f"no mail in {directory}", file=out)
        return 0
    for number, entry in enumerate(entries, start=1):
        print(f"{number:>4}  {entry.name}  to {entry.to}  {entry.subject}", file=out)
    return 0
