"""The shell commands written in README.md and docs/*.md, as a reader would type them: their
code blocks split into commands (continuation lines joined, `$(...)` taken apart), and the
project CLI's own parse of each `queue-pipelines` command."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

SHELL_BLOCK = re.compile(r"^ *```sh\n(.*?)^ *```", re.S | re.M)
YAML_BLOCK = re.compile(r"^ *```yaml\n(.*?)^ *```", re.S | re.M)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
BUILTINS = {"export", "cd", "source", "."}
REQUEST_SHOW = re.compile(r"request show ([a-z_]+:[^\s`'\"]+)")


def substitutions(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost `$(...)` in `text`: parentheses counted outside quotes,
    so that `$(python -c 'print(1)')` is one."""
    found, i = [], 0
    while (start := text.find("$(", i)) != -1:
        depth, quote, j = 1, None, start + 2
        while depth and j < len(text):
            c = text[j]
            if quote:
                quote = None if c == quote else quote
            elif c in "'\"":
                quote = c
            else:
                depth += {"(": 1, ")": -1}.get(c, 0)
            j += 1
        assert depth == 0, f"unbalanced $( in {text!r}"
        found.append((start, j))
        i = j
    return found


def without_substitutions(text: str) -> str:
    for start, end in reversed(substitutions(text)):
        text = f"{text[:start]}SUBSTITUTED{text[end:]}"
    return text


@dataclass(frozen=True)
class Command:
    at: int  # offset in the README
    text: str  # as written, continuation lines joined

    @property
    def inner(self) -> list[Command]:
        """The commands in its `$(...)` substitutions."""
        return [Command(self.at, self.text[a + 2 : b - 1]) for a, b in substitutions(self.text)]

    @property
    def words(self) -> list[str]:
        return shlex.split(without_substitutions(self.text), comments=True)

    @property
    def assignments(self) -> dict[str, str]:
        found = {}
        for word in self.words:
            if not ASSIGNMENT.match(word):
                break
            name, value = word.split("=", 1)
            found[name] = value
        return found

    @property
    def argv(self) -> list[str]:
        """The program and its arguments, after any VAR=value; [] for a bare assignment."""
        return self.words[len(self.assignments) :]


def shell_commands(text: str) -> list[Command]:
    commands = []
    for block in SHELL_BLOCK.finditer(text):
        pending, at = "", block.start(1)
        for line in textwrap.dedent(block.group(1)).splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            if shlex.split(pending, comments=True):
                commands.append(Command(at, pending))
            pending = ""
        assert not pending, f"unfinished command in README: {pending!r}"
    return [part for command in commands for part in (*command.inner, command)]


def banner_commands() -> list[Command]:
    from queue_pipelines.sandbox import dev

    return [Command(-1, f"{dev.cli_command()} {dev.FIRST_REQUEST}")]


def resolves(program: str, path: str) -> bool:
    if program in BUILTINS:
        return True
    if "/" in program:
        found = ROOT / program
        return found.is_file() and os.access(found, os.X_OK)
    return program != "uv" and shutil.which(program, path=path) is not None


def parse_cli(argv: list[str]) -> argparse.Namespace | None:
    """The CLI's parse of `argv`; None for --help (exits 0); fails the test on a usage error."""
    from queue_pipelines.cli import build_parser

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser().parse_args(argv)
        except SystemExit as exit:
            assert exit.code == 0, f"queue-pipelines {shlex.join(argv)}: usage error"
            return None


def cli_arguments(command: Command) -> list[str] | None:
    """The arguments of a queue-pipelines command, run directly or through `make qp`."""
    argv = command.argv
    if argv and argv[0].endswith("/queue-pipelines"):
        return argv[1:]
    if argv[:2] == ["make", "qp"]:
        [args] = [word.removeprefix("ARGS=") for word in argv if word.startswith("ARGS=")]
        return shlex.split(args)
    return None
