"""Stripe's `Idempotency-Key`, in front of localstripe (which ignores the header).

What Stripe documents (docs.stripe.com/api/idempotent_requests), and what is done here:
- Keys belong to an API key and apply to POST requests; on GET and DELETE they do nothing.
- The first response to a key is saved, and a later request with the same key and the same
  parameters gets it back (header `Idempotent-Replayed: true`) without running again.
- The same key with other parameters, or on another endpoint, is refused: HTTP 400, error
  type `idempotency_error` (the stripe SDK raises `stripe.IdempotencyError`).
- A result is saved only once the endpoint began executing: not when the parameters fail
  validation. localstripe does not tell the two apart, so its 400, 401 and 404 answers (its
  parameter checks) are not saved; 2xx, 402 (a declined card stays declined) and 5xx are.
- Keys are kept for 24 hours.
- A request whose key is still in flight gets HTTP 409 (`idempotency_key_in_use`), as from
  Stripe, and is not saved; the stripe SDK retries 409 itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from localstripe.errors import UserError

KEPT_FOR_SECONDS = 24 * 3600

# Headers the replay must not copy: aiohttp sets them for the new response.
_NOT_REPLAYED = {"content-length", "transfer-encoding", "date", "server", "connection"}


@dataclass(frozen=True)
class Saved:
    """A first answer to a key, and the request it answered."""

    saved_at: float
    method: str
    path: str
    params: Any
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def api_key_of(request: web.Request) -> str | None:
    """The API key as the stripe SDK sends it: `Bearer sk_...`, or basic auth's user."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(credentials).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


async def params_of(request: web.Request) -> Any:
    """The request's parameters as parsed, so the order they were encoded in does not count:
    the form-encoded body (each name with its values in order), or a JSON body, and the query."""
    body = await request.read()
    if request.content_type == "application/json":
        try:
            parsed: Any = json.loads(body or b"null")
        except ValueError:
            parsed = body
    else:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {"body": parsed, "query": parse_qs(request.query_string, keep_blank_values=True)}


def stripe_error(status: int, error: dict[str, str]) -> web.Response:
    return web.json_response({"error": error}, status=status)


def worth_saving(response: web.StreamResponse) -> bool:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return False
    return response.status < 400 or response.status == 402 or response.status >= 500


class IdempotencyLayer:
    """The aiohttp middleware. `records` returns the mapping that keeps the saved answers,
    keyed by (API key, idempotency key), oldest first; `clock` is wall time, because the
    records outlive the process (stripe_server keeps them in localstripe's state file)."""

    def __init__(
        self,
        records: Callable[[], MutableMapping[tuple[str, str], Saved]],
        clock: Callable[[], float] = time.time,
    ):
        self._records = records
        self._clock = clock
        # Keys whose first request is still running. Memory only: a key left here by a
        # killed process must not answer 409 forever after a restart.
        self._in_flight: set[tuple[str, str]] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        api_key = api_key_of(request)
        if request.method != "POST" or not idempotency_key or not api_key:
            return await handler(request)
        key = (api_key, idempotency_key)
        params = await params_of(request)
        # From here to `self._in_flight.add` nothing awaits: on aiohttp's one event loop no
        # other request can slip in between the lookup and the claim.
        records = self._records()
        self._forget_expired(records)
        saved = records.get(key)
        if saved is not None:
            return self._replay(saved, request, params, idempotency_key)
        if key in self._in_flight:  # Stripe's answer (not a wait): the client retries
            return stripe_error(
                409,
                {
                    "type": "invalid_request_error",
                    "code": "idempotency_key_in_use",
                    "message": "There is currently another in-progress request using this "
                    f"Idempotent Key: '{idempotency_key}'. Please try again later.",
                },
            )
        self._in_flight.add(key)
        try:
            try:
                response = await handler(request)
            except UserError as error:  # localstripe's refusals (402 declines among them)
                response = error.to_response()
            if worth_saving(response):
                records[key] = Saved(
                    saved_at=self._clock(),
                    method=request.method,
                    path=request.path,
                    params=params,
                    status=response.status,
                    headers=tuple(
                        (name, value)
                        for name, value in response.headers.items()
                        if name.lower() not in _NOT_REPLAYED
                    ),
                    body=response.body,
                )
            return response
        finally:
            self._in_flight.discard(key)

    def _forget_expired(self, records: MutableMapping[tuple[str, str], Saved]) -> None:
        # Oldest first (insertion order): stop at the first one still kept.
        horizon = self._clock() - KEPT_FOR_SECONDS
        while records:
            oldest = next(iter(records))
            if records[oldest].saved_at > horizon:
                break
            del records[oldest]

    @staticmethod
    def _replay(
        saved: Saved, request: web.Request, params: Any, idempotency_key: str
    ) -> web.Response:
        if (saved.method, saved.path) != (request.method, request.path):
            return stripe_error(
                400,
                {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used for the same "
                    f"endpoint they were first used for ('{saved.method} {saved.path}' vs "
                    f"'{request.method} {request.path}'). Try using a key other than "
                    f"'{idempotency_key}' if you meant to execute a different request.",
                },
            )
        if saved.params != params:
            return stripe_error(
                400,
                {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with. Try using a key other than "
                    f"'{idempotency_key}' if you meant to execute a different request.",
                },
            )
        headers = [*saved.headers, ("Idempotent-Replayed", "true")]
        return web.Response(status=saved.status, body=saved.body, headers=headers)
