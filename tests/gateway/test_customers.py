"""Customer requests at the gateway (POST /v1/jobs over real HTTP): written only with the
scope that names them, since a delete is not undone, and only in the token's own tenant."""

from __future__ import annotations

import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import JWTSettings
from tests.gateway.test_jobs import SECRET, claims, gateway_settings, hs256, post
from tests.support.gateway_server import serve


def delete_request(tenant: str, key: str) -> dict:
    return {
        "type": "customer",
        "version": 1,
        "tenant_id": tenant,
        "idempotency_key": key,
        "payload": {"action": "delete", "customer_id": "cus_T3stCustomer"},
    }


def test_customer_requests_need_their_scope_by_name_and_the_tokens_tenant(
    redis_url, instance, key_prefix, tenant
):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = gateway_settings(key_prefix, JWTSettings(algorithm="HS256", key=SECRET))
    with serve(build_app(settings, client, instance)) as url:
        every_type = post(url, delete_request(tenant, "a"), hs256(claims(tenant)))
        by_name = hs256(claims(tenant, scope="jobs:write:customer"))
        other_tenant = post(url, delete_request(f"{tenant}-other", "b"), by_name)
        scoped = post(url, delete_request(tenant, "c"), by_name)

    assert (every_type.status_code, other_tenant.status_code, scoped.status_code) == (
        403,
        403,
        202,
    )
    assert "'jobs:write:customer'" in every_type.json()["error"]
    assert f"token is for tenant {tenant!r}" in other_tenant.json()["error"]
    assert scoped.json()["request_key"] == f"customer:{tenant}:c"
    assert client.xlen(f"{key_prefix}:intake:customer") == 1
    client.close()
