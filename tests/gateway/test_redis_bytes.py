"""Bad bytes in Redis never take a gateway endpoint down (issue #17, point 10): entries that
are not UTF-8, written with XADD into a real intake stream, are read by the gateway's own
Redis client, and /metrics and the other readers of the intake keep answering 200."""

from __future__ import annotations

import httpx
import redis

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.gateway.serve import gateway_redis_client
from tests.gateway.test_jobs import SECRET
from tests.support.gateway_server import serve

# Each is one entry's fields as raw bytes: invalid UTF-8 in the tenant inside the envelope,
# a whole value that is not text, and a field name that is not text.
BAD_ENTRIES = (
    {b"envelope": b'{"type": "payment", "tenant_id": "t\xff\xfe-bad", "payload": {}}'},
    {b"envelope": b"\x80\x81\x82\xc3("},
    {b"\xff\xfename": b"\xfa\xfb"},
)


def test_non_utf8_stream_entries_leave_metrics_answering(redis_url, instance, key_prefix):
    raw = redis.Redis.from_url(redis_url)  # no decoding: the bytes go in as they are
    try:
        for fields in BAD_ENTRIES:
            raw.xadd(f"{key_prefix}:intake:payment".encode(), fields)
    finally:
        raw.close()
    settings = GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
    )
    client = gateway_redis_client(redis_url)
    try:
        with serve(build_app(settings, client, instance), settings) as url:
            metrics = httpx.get(f"{url}/metrics", timeout=60)
            as_json = httpx.get(f"{url}/metrics/json", timeout=60)
            stats = httpx.get(f"{url}/metrics/queue-stats", timeout=30)
            ready = httpx.get(f"{url}/health/ready", timeout=30)
    finally:
        client.close()
    assert metrics.status_code == 200, metrics.text
    assert 'queue_metrics_source_up{source="redis"} 1.0' in metrics.text
    assert as_json.status_code == 200, as_json.text
    assert stats.status_code == 200, stats.text
    payment = stats.json()["streams"]["payment"]
    assert payment["length"] == len(BAD_ENTRIES)
    # A tenant id that is not valid text is counted under "?", as any entry that will be
    # rejected, never echoed.
    assert {t: w["waiting"] for t, w in payment["tenants"].items()} == {"?": len(BAD_ENTRIES)}
    assert ready.status_code == 200, ready.text
