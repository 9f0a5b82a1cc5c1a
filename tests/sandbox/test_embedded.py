"""The embedded services `make run` starts keep their data across restarts."""

from __future__ import annotations

import pytest
import redis

from queue_pipelines.sandbox.servers import free_port, start_localstripe, start_redis, stop
from resources import StripeResource


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


def test_stripe_sandbox_keeps_its_objects_in_its_own_state_file(tmp_path):
    port = free_port()
    state = tmp_path / "stripe.pickle"
    sandbox = start_localstripe(port, state_file=state)
    try:
        client = StripeResource(secret_key="sk_test_x", api_base=f"http://127.0.0.1:{port}").api()
        customer_id = client.find_or_create_customer(
            tenant_id="t", email="keep@example.com", name=None, idempotency_key="k"
        )
    finally:
        stop(sandbox)
    assert state.exists()

    sandbox = start_localstripe(port, state_file=state)
    try:
        again = StripeResource(secret_key="sk_test_x", api_base=f"http://127.0.0.1:{port}")
        assert again.api().client().v1.customers.retrieve(customer_id).email == "keep@example.com"
    finally:
        stop(sandbox)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from the kernel's own tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address if len(address) == width else "?")
    return found


def test_stripe_sandbox_listens_on_loopback_only():
    port = free_port()
    process = start_localstripe(port)
    try:
        # 0100007F is 127.0.0.1 as /proc/net/tcp writes it; '::' or 0.0.0.0 would be all zeros.
        assert _listening_addresses(port) == {"0100007F"}
    finally:
        stop(process)
