"""Metrics off the public surface (token or own port), the process and provider metrics,
the access log and JSON logs, over real HTTP on loopback and real providers."""

from __future__ import annotations

import io
import json
import logging
import uuid
from email.message import EmailMessage

import httpx
import pytest
import redis

from queue_pipelines.gateway.app import build_app, build_metrics_app
from queue_pipelines.gateway.config import GatewaySettings, JWTSettings, settings_from_env
from queue_pipelines.logs import ACCESS_LOGGER, JsonFormatter, configure_logging
from queue_pipelines.telemetry.provider_calls import PROVIDER_REGISTRY
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope
from tests.support.gateway_server import serve

METRICS = ("/metrics", "/metrics/json", "/metrics/queue-stats", "/metrics/system")


def make_settings(key_prefix: str, **extra) -> GatewaySettings:
    return GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
        **extra,
    )


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def test_metrics_behind_a_bearer_token_while_probes_stay_open(client, instance, key_prefix):
    token = "metrics-" + uuid.uuid4().hex
    settings = make_settings(key_prefix, metrics_token=token)
    with serve(build_app(settings, client, instance), settings) as url:
        refused = {path: httpx.get(url + path).status_code for path in METRICS}
        wrong = httpx.get(url + "/metrics", headers={"Authorization": "Bearer nope"})
        allowed = {
            path: httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            for path in METRICS
        }
        live = httpx.get(url + "/health/live")
    assert refused == dict.fromkeys(METRICS, 401)
    assert wrong.status_code == 401
    assert {path: r.status_code for path, r in allowed.items()} == dict.fromkeys(METRICS, 200)
    assert "service_memory_usage_bytes" in allowed["/metrics"].text
    assert "provider_call_duration_seconds" in allowed["/metrics"].text
    assert live.status_code == 200


def test_metrics_on_their_own_port_leave_the_public_one(client, instance, key_prefix):
    settings = make_settings(key_prefix, metrics_port=1)  # any port: this test serves both
    app = build_app(settings, client, instance)
    with (
        serve(app, settings) as public,
        serve(build_metrics_app(app), settings, lifespan="off") as private,
    ):
        on_public = {path: httpx.get(public + path).status_code for path in METRICS}
        on_private = {path: httpx.get(private + path, timeout=30).status_code for path in METRICS}
        probe = httpx.get(public + "/health/live")
    assert on_public == dict.fromkeys(METRICS, 404)
    assert on_private == dict.fromkeys(METRICS, 200)
    assert probe.status_code == 200


def test_metrics_settings_come_from_the_environment():
    env = {"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_METRICS_TOKEN": "t" * 20}
    assert settings_from_env(env).metrics_token == "t" * 20
    assert settings_from_env({**env, "GATEWAY_METRICS_PORT": "9464"}).metrics_port == 9464


def test_system_metrics_report_this_process(client, instance, key_prefix):
    settings = make_settings(key_prefix)
    with serve(build_app(settings, client, instance), settings) as url:
        system = httpx.get(url + "/metrics/system").json()
        text = httpx.get(url + "/metrics", timeout=30).text
    assert system["memory_usage_bytes"] > 10 * 1024 * 1024  # a Python process with Dagster
    assert system["cpu_usage_percent"] >= 0 and system["pid"] > 0
    gauges = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("service_memory_usage_bytes", "service_cpu_usage_percent"))
    }
    memory = {
        kind: gauges[f'service_memory_usage_bytes{{type="{kind}"}}']
        for kind in ("rss", "virtual", "peak_rss")
    }
    assert set(gauges) == {*(f'service_memory_usage_bytes{{type="{k}"}}' for k in memory)} | {
        "service_cpu_usage_percent"
    }
    # Resident memory of a Python process with Dagster, within its address space and peak.
    assert 10 * 1024 * 1024 < memory["rss"] <= memory["virtual"]
    assert memory["rss"] <= memory["peak_rss"] * 1.5  # read a moment apart
    assert system["memory_bytes"]["rss"] == system["memory_usage_bytes"]


def _sample(name: str, **labels) -> float:
    value = PROVIDER_REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_stripe_calls_are_timed_and_their_errors_counted(stripe_resource):
    operation = "CustomerService.create"
    before = _sample("provider_call_duration_seconds_count", provider="stripe", operation=operation)
    stripe_resource.api().find_or_create_customer(
        tenant_id="acme",
        email=f"{uuid.uuid4().hex}@example.com",
        name=None,
        idempotency_key=uuid.uuid4().hex,
    )
    after = _sample("provider_call_duration_seconds_count", provider="stripe", operation=operation)
    assert after == before + 1

    failed = "PaymentIntentService.retrieve"
    errors_before = _sample(
        "provider_call_errors_total",
        provider="stripe",
        operation=failed,
        error="InvalidRequestError",
    )
    with pytest.raises(Exception):  # noqa: B017 - classified by the resource, counted here
        stripe_resource.api().customer_contact("pi_does_not_exist")
    errors_after = _sample(
        "provider_call_errors_total",
        provider="stripe",
        operation=failed,
        error="InvalidRequestError",
    )
    assert errors_after == errors_before + 1
    # ... and timed among the errors, as among all calls.
    assert (
        _sample(
            "provider_call_error_duration_seconds_count",
            provider="stripe",
            operation=failed,
            error="InvalidRequestError",
        )
        == errors_after
    )


def test_smtp_sends_are_timed(smtp_resource):
    before = _sample("provider_call_duration_seconds_count", provider="smtp", operation="send")
    message = EmailMessage()
    message["To"] = "timing@example.com"
    message["Subject"] = "timed"
    message.set_content("hello")
    smtp_resource.sender().send(message)
    assert (
        _sample("provider_call_duration_seconds_count", provider="smtp", operation="send")
        == before + 1
    )


def test_the_access_log_names_each_request_without_its_token(
    client, instance, key_prefix, tenant, caplog
):
    settings = make_settings(key_prefix)
    token = hs256(claims(tenant))
    with (
        caplog.at_level(logging.INFO, logger=ACCESS_LOGGER),
        serve(build_app(settings, client, instance), settings) as url,
    ):
        reply = httpx.post(
            url + "/v1/jobs?token=query-secret",
            json=payment_envelope(tenant),
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"},
            timeout=10,
        )
        probe = httpx.get(url + "/health/live?access_token=query-secret")
    assert reply.status_code == 202 and reply.headers["x-request-id"] == "req-42"
    assert probe.headers["x-request-id"]
    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    lines = [JsonFormatter().format(r) for r in records]
    assert any('"request_id": "req-42"' in line and '"status": 202' in line for line in lines)
    assert any('"path": "/health/live"' in line for line in lines)
    for line in lines:
        assert token not in line and "query-secret" not in line
        assert token.split(".")[0] not in line


def test_json_logs_are_one_object_per_line_without_secrets():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    named = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dagster")
    }
    try:
        assert configure_logging({"QP_LOG_FORMAT": "json"}, stream=stream)
        log = logging.getLogger("queue_pipelines.test")
        log.info(
            "calling with Bearer abc.def.ghi and sk_live_51Hxyz and whsec_c2VjcmV0",
            extra={"run_id": "run-1"},
        )
        log.warning("second line")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, propagate) in named.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["run_id"] == "run-1" and first["level"] == "info"
    assert "abc.def" not in first["message"] and "sk_live_51" not in first["message"]
    assert "whsec_c2V" not in first["message"]
    assert json.loads(lines[1])["message"] == "second line"
    assert not configure_logging({})
