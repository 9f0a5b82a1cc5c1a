"""The gateway as a service: refusing to start without its key, and its probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings
from queue_pipelines.sandbox.servers import free_port
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope
from tests.metrics.test_metrics import gateway_process
from tests.support.gateway_server import serve


def gateway_command(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "queue_pipelines.cli", "gateway", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({}, "GATEWAY_JWT_SECRET"),
        ({"GATEWAY_JWT_SECRET": "short"}, "GATEWAY_JWT_SECRET"),
        ({"GATEWAY_JWT_ALGORITHM": "RS256"}, "GATEWAY_JWT_PUBLIC_KEY"),
        (
            {"GATEWAY_JWT_ALGORITHM": "none", "GATEWAY_JWT_SECRET": "x" * 40},
            "GATEWAY_JWT_ALGORITHM",
        ),
    ],
)
def test_start_up_without_a_key_exits_naming_the_variable(settings, variable):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_JWT") and k != "STRIPE_WEBHOOK_SECRET"
    }
    result = gateway_command({**env, **settings})
    assert result.returncode != 0
    assert variable in result.stderr, result.stderr


def settings(key_prefix: str) -> GatewaySettings:
    return GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key="k" * 32),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
    )


def test_probes_name_each_dependency(redis_url, instance, key_prefix):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with serve(build_app(settings(key_prefix), client, instance)) as url:
        live = httpx.get(f"{url}/health/live")
        ready = httpx.get(f"{url}/health/ready")
        # Start-up also waits for the metrics to read the run history once, as a
        # startupProbe would poll it.
        deadline = time.monotonic() + 180  # a hang guard: start-up on a loaded machine is slow
        while (startup := httpx.get(f"{url}/health/startup", timeout=10)).status_code != 200:
            assert startup.json()["status"] == "starting"
            assert time.monotonic() < deadline, startup.text
            time.sleep(0.1)
        webhook = httpx.post(f"{url}/v1/webhooks/stripe", content=b"{}")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert ready.status_code == 200
    dependencies = ready.json()["dependencies"]
    assert {name: d["status"] for name, d in dependencies.items()} == {
        "redis": "up",
        "dagster_storage": "up",
    }
    assert startup.json()["status"] == "started" and startup.json()["metrics_warm"] is True
    assert webhook.status_code == 503 and "STRIPE_WEBHOOK_SECRET" in webhook.json()["error"]


def test_redis_down_is_not_ready_and_metrics_say_so(instance, key_prefix):
    # A port nothing listens on: Redis refuses the connection, as when it is down.
    client = redis.Redis(
        port=free_port(),
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),  # fail at once instead of redis-py's backoff retries
        decode_responses=True,
    )
    with serve(build_app(settings(key_prefix), client, instance)) as url:
        live = httpx.get(f"{url}/health/live")
        ready = httpx.get(f"{url}/health/ready", timeout=10)
        startup = httpx.get(f"{url}/health/startup", timeout=10)
        metrics = httpx.get(f"{url}/metrics", timeout=30)
        stats = httpx.get(f"{url}/metrics/queue-stats", timeout=10)
    assert live.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["dependencies"]["redis"]["status"] == "down"
    assert "ConnectionError" in body["dependencies"]["redis"]["detail"]
    assert body["dependencies"]["dagster_storage"]["status"] == "up"
    assert startup.status_code == 503 and startup.json()["status"] == "starting"
    assert metrics.status_code == 200
    assert 'queue_metrics_source_up{source="redis"} 0.0' in metrics.text
    assert 'queue_metrics_source_up{source="dagster"} 1.0' in metrics.text
    assert stats.status_code == 503


def service_env(tmp_path, redis_url: str, key_prefix: str, **settings: str) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "STRIPE_", "DAGSTER_", "QP_LOG"))
    }
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "REDIS_URL": redis_url,
        "QUEUE_KEY_PREFIX": key_prefix,
        "GATEWAY_JWT_SECRET": SECRET,
        **settings,
    }


def test_the_served_gateway_logs_each_request_in_plain_text_by_default(
    tmp_path, redis_url, key_prefix, tenant
):
    log = tmp_path / "gateway.log"
    token = hs256(claims(tenant))
    with gateway_process(service_env(tmp_path, redis_url, key_prefix), log) as url:
        accepted = httpx.post(
            f"{url}/v1/jobs",
            json=payment_envelope(tenant),
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "plain-1"},
            timeout=30,
        )
        httpx.get(f"{url}/health/live?access_token=query-secret", timeout=30)
    assert accepted.status_code == 202, accepted.text
    lines = log.read_text().splitlines()
    access = [line for line in lines if "queue_pipelines.gateway.access" in line]
    assert any("POST /v1/jobs 202" in line for line in access), lines
    assert any("GET /health/live 200" in line for line in access), lines
    assert not any(token in line or "query-secret" in line for line in lines)


def test_json_logs_and_a_metrics_port_of_its_own(tmp_path, redis_url, key_prefix):
    log, metrics_port = tmp_path / "gateway.log", free_port()
    env = service_env(
        tmp_path,
        redis_url,
        key_prefix,
        QP_LOG_FORMAT="json",
        GATEWAY_METRICS_PORT=str(metrics_port),
    )
    with gateway_process(env, log) as url:
        public = httpx.get(f"{url}/metrics", headers={"X-Request-ID": "json-1"}, timeout=30)
        private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60)
    assert public.status_code == 404
    assert private.status_code == 200 and "queue_jobs_processed_total" in private.text
    # Every line, the start-up warnings among them, is one JSON object.
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any("STRIPE_WEBHOOK_SECRET is unset" in e["message"] for e in entries)
    access = [e for e in entries if e["logger"] == "queue_pipelines.gateway.access"]
    assert {"request_id": "json-1", "path": "/metrics", "status": 404}.items() <= next(
        e for e in access if e.get("request_id") == "json-1"
    ).items()
