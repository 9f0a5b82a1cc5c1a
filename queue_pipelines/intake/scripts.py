"""The intake's Lua scripts: each a file in lua/ beside this module (KEYS and ARGV described
at its top), registered on a client through `IntakeScripts`, the one loader. A script runs
atomically in Redis: what it does cannot be half done by a crash, nor interleaved with
another producer or tick."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).parent / "lua"
# Keys one call of a many-key script takes: a tick's thousands go in a few calls, each short
# enough not to hold Redis (which runs a script to its end) for long.
KEYS_PER_CALL = 500


@cache
def lua_source(name: str) -> str:
    """The text of lua/<name>.lua."""
    return (LUA_DIR / f"{name}.lua").read_text()


@dataclass(frozen=True)
class IntakeScripts:
    dead_letter: Script  # entries -> the dead-letter stream, with their fields and a reason
    settle: Script  # a success: its outcome, its entries acked and deleted, its dead letters gone
    remember_request: Script  # request keys' first entries and payload digests
    read_fields: Script  # some fields of many hashes
    assign_batch: Script  # a batch recorded and its requests in flight in it
    track: Script  # entry ids added to their requests' waiting sets
    reopen_request: Script  # a replayed dead letter's request may run again
    enqueue_once: Script  # XADD unless the request key was enqueued before (the gateway)

    @classmethod
    def register(cls, client: redis.Redis) -> IntakeScripts:
        """Every script on `client`. Each call is an EVALSHA; redis-py loads the script
        when Redis does not know it (the first call, or after a restart) and calls again."""
        return cls(
            **{name: client.register_script(lua_source(name)) for name in cls.__dataclass_fields__}
        )


def call_per_keys(
    client: redis.Redis,
    script: Script,
    keys: Sequence[str],
    args: Callable[[int, int], list[Any]],
    per_call: int = KEYS_PER_CALL,
) -> list[Any]:
    """`script` over `keys`, KEYS_PER_CALL keys a call, the calls in one round trip;
    `args(start, stop)` gives the ARGV of keys[start:stop]. Returns the calls' replies."""
    if len(keys) <= per_call:
        return [script(keys=list(keys), args=args(0, len(keys)), client=client)]
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(keys), per_call):
        stop = min(start + per_call, len(keys))
        script(keys=list(keys[start:stop]), args=args(start, stop), client=pipe)
    return pipe.execute()


def read_fields(
    client: redis.Redis, scripts: IntakeScripts, keys: Sequence[str], fields: Sequence[str]
) -> list[tuple[str | None, ...]]:
    """`fields` of each hash of `keys` (None where missing), read_fields.lua many keys a
    call: one tuple per key."""
    if not keys:
        return []
    replies = call_per_keys(client, scripts.read_fields, keys, lambda start, stop: list(fields))
    flat = [value for reply in replies for value in reply]
    width = len(fields)
    return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]
