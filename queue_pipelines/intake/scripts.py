"""The intake's Lua scripts: each a file in lua/ beside this module (KEYS and ARGV described
at its top), registered on a client through `IntakeScripts`, the one loader. A script runs
atomically in Redis: what it does cannot be half done by a crash, nor interleaved with
another producer or tick."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).parent / "lua"


@cache
def lua_source(name: str) -> str:
    """The text of lua/<name>.lua."""
    return (LUA_DIR / f"{name}.lua").read_text()


@dataclass(frozen=True)
class IntakeScripts:
    dead_letter: Script  # entries -> the dead-letter stream, with their fields and a reason
    settle: Script  # a success: its outcome, its entries acked and deleted, its dead letters gone
    remember_request: Script  # a request key's first entry and payload digest
    reopen_request: Script  # a replayed dead letter's request may run again
    enqueue_once: Script  # XADD unless the request key was enqueued before (the gateway)

    @classmethod
    def register(cls, client: redis.Redis) -> IntakeScripts:
        """Every script on `client`. Each call is an EVALSHA; redis-py loads the script
        when Redis does not know it (the first call, or after a restart) and calls again."""
        return cls(
            **{name: client.register_script(lua_source(name)) for name in cls.__dataclass_fields__}
        )
