"""Token lifetime and scope-less tokens (issue #17, point 10), over real HTTP on loopback: a
token that lives longer than the configured maximum (24 h by default) is refused, an `exp`
of 1e300 too; a token without a scope claim writes nothing unless the operator opts in."""

from __future__ import annotations

import io
import time

import jwt
import pytest
import redis

from queue_pipelines.cli import main as cli_main
from queue_pipelines.gateway.app import build_app
from queue_pipelines.gateway.config import (
    DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
    GatewayConfigError,
    GatewaySettings,
    JWTSettings,
    jwt_settings_from_env,
)
from tests.gateway.test_jobs import SECRET, claims, hs256, payment_envelope, post
from tests.support.gateway_server import serve

DAY = 24 * 3600


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def settings_for(key_prefix: str, **jwt_extra) -> GatewaySettings:
    return GatewaySettings(
        jwt=JWTSettings(algorithm="HS256", key=SECRET, **jwt_extra),
        stripe_webhook_secret=None,
        key_prefix=key_prefix,
    )


@pytest.fixture
def gateway(client, instance, key_prefix):
    settings = settings_for(key_prefix)
    with serve(build_app(settings, client, instance), settings) as url:
        yield url


def lived(tenant: str, **times) -> str:
    return hs256({"tenant": tenant, "scope": "jobs:write", **times})


def test_the_default_maximum_lifetime_is_a_day():
    assert DEFAULT_MAX_TOKEN_LIFETIME_SECONDS == DAY
    assert JWTSettings(algorithm="HS256", key=SECRET).max_lifetime_seconds == DAY
    env = {"GATEWAY_JWT_SECRET": SECRET}
    assert jwt_settings_from_env(env).max_lifetime_seconds == DAY
    configured = {**env, "GATEWAY_JWT_MAX_LIFETIME_SECONDS": "3600"}
    assert jwt_settings_from_env(configured).max_lifetime_seconds == 3600


@pytest.mark.parametrize(
    ("case", "times"),
    [
        # exp - iat over a day, though it expires within the hour.
        ("iat_long_ago", lambda now: {"iat": now - 2 * DAY, "exp": now + 600}),
        ("exp_minus_iat", lambda now: {"iat": now, "exp": now + DAY + 3600}),
        # No iat: exp - now.
        ("no_iat", lambda now: {"exp": now + DAY + 3600}),
        ("exp_1e300", lambda now: {"exp": 1e300}),
        ("exp_1e300_with_iat", lambda now: {"iat": now, "exp": 1e300}),
        ("exp_huge_integer", lambda now: {"exp": 10**400}),
        ("iat_minus_1e300", lambda now: {"iat": -1e300, "exp": now + 600}),
    ],
)
def test_tokens_that_live_longer_than_the_maximum_are_refused(
    gateway, client, key_prefix, tenant, case, times
):
    reply = post(gateway, payment_envelope(tenant), lived(tenant, **times(int(time.time()))))
    assert reply.status_code == 401, reply.text
    assert f"longer than the {DAY} s" in reply.json()["error"]
    assert client.xlen(f"{key_prefix}:intake:payment") == 0


def test_tokens_within_the_maximum_are_accepted(gateway, client, key_prefix, tenant):
    now = int(time.time())
    for times in ({"iat": now, "exp": now + DAY}, {"exp": now + DAY - 60}, {"exp": now + 60}):
        reply = post(gateway, payment_envelope(tenant), lived(tenant, **times))
        assert reply.status_code == 202, (times, reply.text)
    assert client.xlen(f"{key_prefix}:intake:payment") == 3


def test_a_token_without_a_scope_writes_nothing_by_default(gateway, client, key_prefix, tenant):
    reply = post(gateway, payment_envelope(tenant), hs256(claims(tenant, scope=None)))
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert "no scope claim" in error and "'jobs:write:payment'" in error
    assert client.xlen(f"{key_prefix}:intake:payment") == 0


def test_unscoped_tokens_write_when_the_operator_allows_them(client, instance, key_prefix, tenant):
    settings = settings_for(key_prefix, allow_unscoped=True)
    with serve(build_app(settings, client, instance), settings) as url:
        unscoped = post(url, payment_envelope(tenant), hs256(claims(tenant, scope=None)))
        # A token that has a scope is still held to it.
        refund_only = post(
            url, payment_envelope(tenant), hs256(claims(tenant, scope="jobs:write:refund"))
        )
    assert unscoped.status_code == 202, unscoped.text
    assert refund_only.status_code == 403
    assert client.xlen(f"{key_prefix}:intake:payment") == 1


@pytest.mark.parametrize(
    ("value", "allowed"), [(None, False), ("refuse", False), ("allow", True), ("ALLOW", True)]
)
def test_unscoped_tokens_setting(value, allowed):
    env = {"GATEWAY_JWT_SECRET": SECRET}
    if value is not None:
        env["GATEWAY_JWT_UNSCOPED_TOKENS"] = value
    assert jwt_settings_from_env(env).allow_unscoped is allowed


def test_an_unknown_unscoped_tokens_setting_refuses_to_start():
    env = {"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_UNSCOPED_TOKENS": "true"}
    with pytest.raises(GatewayConfigError, match="GATEWAY_JWT_UNSCOPED_TOKENS"):
        jwt_settings_from_env(env)


def _cli_token(monkeypatch, *argv: str) -> tuple[int, str, str]:
    for name in ("GATEWAY_JWT_ALGORITHM", "GATEWAY_JWT_MAX_LIFETIME_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JWT_SECRET", SECRET)
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["gateway", "token", *argv], out=out, err=err)
    return code, out.getvalue().strip(), err.getvalue()


def test_the_cli_token_is_scoped_and_within_the_lifetime(monkeypatch):
    code, token, _ = _cli_token(monkeypatch, "--tenant", "demo")
    assert code == 0
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded["scope"] == "jobs:write"
    assert decoded["exp"] - decoded["iat"] == 3600

    code, token, err = _cli_token(monkeypatch, "--tenant", "demo", "--ttl", str(2 * DAY))
    assert code == 2 and token == ""
    assert "GATEWAY_JWT_MAX_LIFETIME_SECONDS" in err


def test_the_cli_token_uses_the_secret_make_run_generated(monkeypatch, tmp_path):
    """Without GATEWAY_JWT_SECRET, `gateway token` signs as `make run`'s gateway verifies:
    with the secret generated in DAGSTER_HOME (issue #21, item 6); without that file, the
    error names it."""
    for name in ("GATEWAY_JWT_SECRET", "GATEWAY_JWT_ALGORITHM", "GATEWAY_JWT_MAX_LIFETIME_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    secret_file = tmp_path / "gateway-jwt-secret"

    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["gateway", "token", "--tenant", "demo"], out=out, err=err) == 2
    assert out.getvalue() == ""
    assert "GATEWAY_JWT_SECRET is not set" in err.getvalue()
    assert f"`make run` generates one for its gateway in {secret_file}" in err.getvalue()

    secret_file.write_text(SECRET + "\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["gateway", "token", "--tenant", "demo"], out=out, err=err) == 0
    assert jwt.decode(out.getvalue().strip(), SECRET, algorithms=["HS256"])["tenant"] == "demo"
    assert f"signed with the secret `make run` generated in {secret_file}" in err.getvalue()

    monkeypatch.setenv("GATEWAY_JWT_SECRET", "x" * 48)  # configured: the file is not read
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["gateway", "token", "--tenant", "demo"], out=out, err=err) == 0
    assert jwt.decode(out.getvalue().strip(), "x" * 48, algorithms=["HS256"])
    assert err.getvalue() == ""
