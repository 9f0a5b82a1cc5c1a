"""What README.md and docs/*.md name exists in the code (issue #20, item 5): every sensor, job
and schedule; every `queue-pipelines` command in their shell blocks parses with the CLI's own
parser, wherever it runs (.venv/bin, `make qp`, inside a pod); the `dagster sensor` loops name
real sensors; every project environment variable named is one the service reads."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.support.shell_blocks import ROOT, parse_cli, shell_commands

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# docs/new-job-type.md walks through adding `ticket_cancel`, a type registered by a test only.
EXAMPLE_TYPE_PAGE = ROOT / "docs" / "new-job-type.md"
DEFINITION_NAME = re.compile(r"\b([a-z][a-z0-9_]*_(?:sensor|job|schedule))\b")
# Prefixes of the project's own variables; Dagster's and the platform's are listed apart.
PROJECT_VARIABLE = re.compile(
    r"`((?:QP|STRIPE|SMTP|SOLANA|REDIS|GATEWAY|WEBHOOK|QUEUE|ARWEAVE|NFT|EMAIL|"
    r"DAGSTER_POSTGRES|LOG|METRICS|TENANT|RUN_RETENTION)_[A-Z0-9_<>]*)"
)


def texts() -> list[tuple[str, str]]:
    return [(path.relative_to(ROOT).as_posix(), path.read_text()) for path in DOCS]


@pytest.fixture(scope="module")
def definitions() -> set[str]:
    from queue_pipelines.definitions import defs

    repository = defs.get_repository_def()
    return {
        *(sensor.name for sensor in repository.sensor_defs),
        *(job.name for job in repository.get_all_jobs()),
        *(schedule.name for schedule in repository.schedule_defs),
    }


def test_every_sensor_job_and_schedule_the_docs_name_exists(definitions):
    unknown = []
    for name, text in texts():
        if name == EXAMPLE_TYPE_PAGE.relative_to(ROOT).as_posix():
            text = text.replace("ticket_cancel", "")
        for found in DEFINITION_NAME.finditer(text):
            word = found.group(1)
            if word.startswith("_") or word in {"batch_job", "execute_job"}:
                continue  # `${s}_intake_sensor`; the builder and Dagster's own function
            if word not in definitions:
                unknown.append(f"{name}: {word}")
    assert unknown == []


def queue_pipelines_arguments(words: list[str]) -> list[str] | None:
    """The arguments of a queue-pipelines command as written: run from .venv/bin, by `make qp`,
    or inside a pod (`kubectl exec ... -- queue-pipelines ...`)."""
    for i, word in enumerate(words):
        program = word == "queue-pipelines" or word.endswith("/queue-pipelines")
        if program and (i == 0 or words[i - 1] == "--"):
            return words[i + 1 :]
    if words[:2] == ["make", "qp"]:
        [args] = [word.removeprefix("ARGS=") for word in words if word.startswith("ARGS=")]
        return shlex.split(args)
    return None


def test_every_cli_command_in_the_docs_parses():
    parsed = []
    for name, text in texts():
        for command in shell_commands(text):
            arguments = queue_pipelines_arguments(command.argv)
            if arguments is not None:
                parse_cli(arguments)  # a usage error fails here, naming the command
                parsed.append(f"{name}: {command.text}")
    assert len(parsed) >= 20, parsed


def test_the_sensor_loops_name_every_intake_sensor(definitions):
    """The upgrade runbook stops and starts the intake sensors in a shell loop."""
    intake_sensors = {name for name in definitions if name.endswith("_intake_sensor")}
    loops = 0
    for name, text in texts():
        for loop in re.finditer(r"for s in ([a-z_ ]+); do\n(.*?)done", text, re.S):
            if "_intake_sensor" in loop.group(2):
                named = {f"{word}_intake_sensor" for word in loop.group(1).split()}
                assert named == intake_sensors, name
                loops += 1
    assert loops >= 1


def per_type(pattern: str, variable: str) -> bool:
    """QP_CONCURRENCY_PAYMENT is QP_CONCURRENCY_<TYPE> for a job type the registry knows."""
    from queue_pipelines.intake.registry import SPECS

    prefix = pattern.removesuffix("<TYPE>")
    return variable.startswith(prefix) and variable[len(prefix) :].lower() in SPECS


def test_every_project_variable_the_docs_name_is_read_by_the_service():
    from queue_pipelines.env_vars import VARIABLES

    known = {variable.name for variable in VARIABLES}
    # Read by the run-retention CronJob's script, not by the service.
    purge_script = (ROOT / "deploy" / "k8s" / "purge_runs.py").read_text()
    known |= {name for name in ("RUN_RETENTION_DAYS",) if f'"{name}"' in purge_script}
    unknown = []
    for name, text in texts():
        for found in PROJECT_VARIABLE.finditer(text):
            variable = found.group(1)
            if "<KIND>" in variable:  # the pattern of WEBHOOK_URL_<kind>: one of them exists
                variable = next((k for k in known if k.startswith("WEBHOOK_URL_")), variable)
            if variable not in known and not any(
                per_type(name, variable) for name in known if name.endswith("_<TYPE>")
            ):
                unknown.append(f"{name}: {variable}")
    assert unknown == []
