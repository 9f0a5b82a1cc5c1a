"""The intake wire format: the envelope every producer writes around a payload.

This module is the contract other services depend on (docs/intake.md). It imports nothing
from Dagster so that producers load it fast. The payload models are in payloads.py, the job
types in registry.py.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, Field, ValidationError

from queue_pipelines.intake.payloads import Identifier, WireModel, json_depth
from queue_pipelines.intake.registry import JOB_TYPES, PAYLOAD_MODELS, JobType
from queue_pipelines.intake.text_fields import SingleLineText, escape_controls

ENVELOPE_VERSION = 1
SUPPORTED_VERSIONS = frozenset({ENVELOPE_VERSION})
MAX_ENVELOPE_BYTES = 64 * 1024
# No field of the envelope nests deeper than this; deeper input is refused before validation
# (pydantic and json would otherwise recurse until Python's own limit).
MAX_JSON_DEPTH = 16

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of a surrogate (\uD800-\uDFFF): JSON text in ASCII without one cannot decode
# to a lone surrogate (json.loads reads ASCII bytes as UTF-8 when they hold no NUL).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
# Every registered payload model, in registry order (the JSON Schema's anyOf keeps it).
AnyPayload = Union[tuple(PAYLOAD_MODELS.values())]  # noqa: UP007 - built from the registry


class Envelope(WireModel):
    """One job request. `payload` is validated against the model for `type`."""

    id: SingleLineText = Field(
        default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=64
    )
    type: JobType
    version: Literal[1] = Field(default=ENVELOPE_VERSION, description="Required on the wire.")
    tenant_id: Identifier
    idempotency_key: IdempotencyKey
    # strict: "7", true and 5.0 are not priorities.
    priority: int = Field(default=0, ge=-100, le=100, strict=True, description="Higher runs first.")
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    payload: AnyPayload

    @property
    def request_key(self) -> str:
        """Identity of the request: idempotency keys are scoped by job type and tenant."""
        return f"{self.type}:{self.tenant_id}:{self.idempotency_key}"

    def to_wire(self) -> str:
        """The JSON a stream entry carries; refuses what the sensor would reject for size."""
        wire = self.model_dump_json()
        size = len(wire.encode())
        if size > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(
                f"envelope is {size} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit"
            )
        return wire


class EnvelopeError(ValueError):
    """An entry that does not match the wire format; `reason` is what the dead letter says,
    `problems` the same one field at a time ({"field": ..., "message": ...})."""

    def __init__(self, reason: str, problems: list[dict[str, str]] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.problems = problems if problems is not None else [{"field": "", "message": reason}]


def parse_envelope(raw: str | bytes, expected_type: str | None = None) -> Envelope:
    """Validate one wire envelope, raising EnvelopeError with a readable reason."""
    if isinstance(raw, str):
        try:
            # Redis clients here decode with surrogateescape, so bytes that are not UTF-8
            # arrive as lone surrogates and fail this strict encode.
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EnvelopeError(f"envelope is not valid UTF-8: {exc.reason}") from None
    size = len(raw)
    if size > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is {size} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise EnvelopeError(f"invalid JSON: {exc}") from None
    # What the text itself rules out need not be looked for in the data, a node at a time
    # (the intake sensor parses thousands a tick): no deeper nesting than it has brackets, and
    # no lone surrogate in ASCII without a surrogate escape.
    return _validated(
        data,
        expected_type,
        deep=raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH,
        surrogates=not raw.isascii() or b"\0" in raw or bool(_SURROGATE_ESCAPE.search(raw)),
    )


def envelope_from_dict(data: Any, expected_type: str | None = None) -> Envelope:
    return _validated(data, expected_type, deep=True, surrogates=True)


def _validated(data: Any, expected_type: str | None, *, deep: bool, surrogates: bool) -> Envelope:
    """`data` as an Envelope; `deep` and `surrogates` False when the JSON text it came from
    could not hold what those checks look for."""
    if not isinstance(data, dict):
        raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
    if deep and json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise EnvelopeError(f"envelope is nested deeper than {MAX_JSON_DEPTH} levels")
    where = lone_surrogate_in(data) if surrogates else None
    if where is not None:
        raise EnvelopeError(
            f"envelope is not valid UTF-8: {where} holds a lone surrogate (a "
            "\\ud800-\\udfff escape or bytes that are not UTF-8)",
            [{"field": where, "message": "holds a lone surrogate: not text"}],
        )
    # Version and type are checked first so that the reason names them, not a payload field.
    if "version" not in data:
        raise EnvelopeError(f"version: Field required (supported: {sorted(SUPPORTED_VERSIONS)})")
    version = data["version"]
    # `type(...) is int`: JSON's true and 1.0 compare equal to 1 in Python, but are not 1.
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise EnvelopeError(
            f"unsupported envelope version {version!r}: supported {sorted(SUPPORTED_VERSIONS)}"
        )
    job_type = data.get("type")
    if not isinstance(job_type, str) or job_type not in PAYLOAD_MODELS:
        raise EnvelopeError(
            f"unknown job type {job_type!r}: expected one of {', '.join(JOB_TYPES)}"
        )
    if expected_type is not None and job_type != expected_type:
        raise EnvelopeError(f"job type {job_type!r} does not belong on the {expected_type} stream")
    payload = data.get("payload")
    try:
        typed_payload = PAYLOAD_MODELS[job_type].model_validate(payload)
    except ValidationError as exc:
        raise EnvelopeError(
            describe_validation_error(exc, prefix="payload"),
            validation_problems(exc, prefix="payload"),
        ) from None
    try:
        return Envelope.model_validate({**data, "payload": typed_payload})
    except ValidationError as exc:
        raise EnvelopeError(describe_validation_error(exc), validation_problems(exc)) from None


def lone_surrogate_in(data: Any) -> str | None:
    """The path of the first string (value or key) in JSON-like `data` holding a lone
    surrogate, or None. JSON's "\\ud800" escapes decode to them; they cannot be written out
    as UTF-8, so an envelope holding one would fail wherever it is serialized again."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, value in item.items():
                here = f"{path}.{escape_controls(key)}" if path else escape_controls(key)
                if _SURROGATE.search(key):
                    return here
                stack.append((value, here))
        elif isinstance(item, list):
            stack.extend((value, f"{path}.{index}") for index, value in enumerate(item))
    return None


def validation_problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """One {"field": "payload.amount", "message": ...} per problem."""
    problems = []
    for error in exc.errors():
        # A location holds the producer's own dict keys: escaped, so that a refusal printed
        # on a terminal or in a dead letter carries no control character of theirs.
        location = ".".join(
            escape_controls(str(part)) for part in (prefix, *error["loc"]) if part != ""
        )
        problems.append({"field": location, "message": error["msg"].removeprefix("Value error, ")})
    return problems


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One problem per clause, 'field.path: message', the way a dead letter shows it."""
    return "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else p["message"]
        for p in validation_problems(exc, prefix)
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope, generated from the models (docs/intake.schema.json)."""
    schema = Envelope.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "queue-pipelines intake envelope, version 1"
    return schema
