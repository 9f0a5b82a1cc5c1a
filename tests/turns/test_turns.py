"""Turns (queue_pipelines/turns.py) on a real Redis: one holder at a time, a transient
failure for who waits too long, and a release that fails (the turn expired while the effect
was made) never raised over the effect."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from queue_pipelines.failures import TransientError
from queue_pipelines.turns import Turns


@pytest.fixture
def turns(redis_url, key_prefix) -> Turns:
    client = redis.Redis.from_url(redis_url)
    return Turns(client, lambda name: f"{key_prefix}:lock:test:{name}", "refund of", "busy")


def test_a_second_holder_waits_then_fails_transiently(turns):
    impatient = Turns(turns.client, turns.key_of, turns.what, turns.code, wait_seconds=0.2)
    with turns.holding("pi_1"), pytest.raises(TransientError) as busy, impatient.holding("pi_1"):
        pass
    assert (busy.value.code, busy.value.reason) == ("busy", "another refund of pi_1 is still going")
    with impatient.holding("pi_1"):  # free again once the first let go
        pass


def test_a_turn_that_expired_while_held_is_let_go_without_an_error(turns, caplog):
    short = Turns(turns.client, turns.key_of, turns.what, turns.code, seconds=0.2)
    done = []
    with caplog.at_level(logging.WARNING, logger="queue_pipelines.turns"), short.holding("pi_2"):
        time.sleep(0.5)  # the effect took longer than the turn lasts
        done.append("refunded")
    assert done == ["refunded"]
    assert "releasing the turn of refund of pi_2 failed" in caplog.text
