"""Bearer tokens without a gateway: `verify` against HS256 and a generated RS256 key pair,
each refusal's status and code (the label of gateway_auth_refusals_total), the scope rules of
`Caller.authorize`, and the CLI's `make_token` / `print_token` against the same settings."""

from __future__ import annotations

import io
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from queue_pipelines.gateway.auth import (
    SCOPE_ALL_JOBS,
    SCOPE_OPERATOR,
    AuthError,
    Caller,
    bearer_token,
    verify,
)
from queue_pipelines.gateway.config import GatewayConfigError, JWTSettings, jwt_settings_from_env
from queue_pipelines.gateway.tokens import make_token, print_token
from queue_pipelines.settings import load

SECRET = "unit-tier-hs256-secret-of-32-bytes!!"
HS256 = JWTSettings(algorithm="HS256", key=SECRET, max_lifetime_seconds=3600)


def signed(claims: dict, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def fresh(**claims) -> dict:
    now = int(time.time())
    return {"tenant": "acme", "iat": now, "exp": now + 600, **claims}


def refusal(token: str, settings: JWTSettings = HS256) -> tuple[int, str]:
    with pytest.raises(AuthError) as caught:
        verify(token, settings)
    return caught.value.status, caught.value.code


def test_a_valid_token_names_its_tenant_subject_and_scopes():
    caller = verify(signed(fresh(sub="svc", scope=f"{SCOPE_ALL_JOBS} {SCOPE_OPERATOR}")), HS256)

    assert caller == Caller("acme", "svc", frozenset({SCOPE_ALL_JOBS, SCOPE_OPERATOR}))
    assert caller.operator
    assert verify(signed(fresh()), HS256).scopes is None


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "missing_token"), ("", "missing_token"), ("Basic abc", "malformed_header")],
)
def test_the_authorization_header_must_be_a_bearer_token(header, code):
    with pytest.raises(AuthError) as caught:
        bearer_token(header)
    assert (caught.value.status, caught.value.code) == (401, code)
    assert bearer_token("bearer  tok ") == "tok"


def test_each_bad_token_is_refused_with_its_own_code():
    now = int(time.time())
    assert refusal("not.a.jwt") == (401, "malformed_token")
    assert refusal(jwt.encode(fresh(), SECRET * 2, algorithm="HS512")) == (401, "algorithm")
    assert refusal(signed(fresh(), key="another-secret-also-32-bytes-long!!")) == (
        401,
        "bad_signature",
    )
    assert refusal(signed({"tenant": "acme", "iat": now - 900, "exp": now - 300})) == (
        401,
        "expired",
    )
    assert refusal(signed({"tenant": "acme"})) == (401, "missing_claim")
    assert refusal(signed({"iat": now, "exp": now + 60})) == (401, "missing_claim")
    assert refusal(signed(fresh(tenant=""))) == (401, "invalid_claims")
    assert refusal(signed(fresh(tenant=7))) == (401, "invalid_claims")


def test_time_claims_must_be_numbers_that_a_clock_can_hold():
    now = int(time.time())
    # PyJWT would take the string; RFC 7519's NumericDate is a JSON number.
    assert refusal(signed({"tenant": "acme", "iat": now, "exp": str(now + 60)})) == (
        401,
        "invalid_claims",
    )
    assert refusal(signed({"tenant": "acme", "iat": True, "exp": now + 60})) == (
        401,
        "invalid_claims",
    )
    assert refusal(signed({"tenant": "acme", "exp": 1e300})) == (401, "too_long_lived")


def test_a_token_living_past_the_maximum_is_refused_with_or_without_iat():
    now = int(time.time())
    assert refusal(signed({"tenant": "acme", "iat": now, "exp": now + 3601})) == (
        401,
        "too_long_lived",
    )
    assert refusal(signed({"tenant": "acme", "exp": now + 7200})) == (401, "too_long_lived")
    # Issued long ago, expiring within the hour after `iat`: only its age since iat counts.
    assert verify(signed({"tenant": "acme", "iat": now - 3000, "exp": now + 600}), HS256)


def test_audience_and_issuer_are_checked_when_configured():
    settings = JWTSettings(
        "HS256", SECRET, audience="queue", issuer="idp", max_lifetime_seconds=3600
    )

    assert verify(signed(fresh(aud="queue", iss="idp")), settings).tenant == "acme"
    assert refusal(signed(fresh(aud="other", iss="idp")), settings) == (401, "invalid_token")
    assert refusal(signed(fresh(aud="queue", iss="other")), settings) == (401, "invalid_token")


def test_rs256_verifies_with_the_public_key_only():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = jwt_settings_from_env(
        {"GATEWAY_JWT_ALGORITHM": "RS256", "GATEWAY_JWT_PUBLIC_KEY": pem.decode()}
    )

    assert verify(signed(fresh(), key=private, algorithm="RS256"), settings).tenant == "acme"
    # An HS256 token signed with the public key as its secret: the algorithm is pinned.
    assert refusal(signed(fresh(), key=SECRET), settings) == (401, "algorithm")


def caller(scopes: set[str] | None) -> Caller:
    return Caller("acme", None, None if scopes is None else frozenset(scopes))


def test_jobs_write_or_the_types_scope_writes_a_type_of_the_general_scope():
    caller({SCOPE_ALL_JOBS}).authorize("acme", "payment", allow_unscoped=False)
    caller({"jobs:write:payment"}).authorize("acme", "payment", allow_unscoped=False)
    for scopes in ({"jobs:write:refund"}, set()):
        with pytest.raises(AuthError) as caught:
            caller(scopes).authorize("acme", "payment", allow_unscoped=False)
        assert (caught.value.status, caught.value.code) == (403, "missing_scope")


def test_a_type_scoped_by_name_needs_its_own_scope_whatever_else_the_token_holds():
    caller({"jobs:write:customer"}).authorize("acme", "customer", allow_unscoped=False)
    for scopes in ({SCOPE_ALL_JOBS}, None):
        with pytest.raises(AuthError, match="jobs:write:customer"):
            caller(scopes).authorize("acme", "customer", allow_unscoped=True)


def test_an_unscoped_token_writes_only_when_the_operator_allows_it():
    caller(None).authorize("acme", "payment", allow_unscoped=True)
    with pytest.raises(AuthError, match="no scope claim"):
        caller(None).authorize("acme", "payment", allow_unscoped=False)


def test_a_token_writes_only_for_its_own_tenant():
    with pytest.raises(AuthError) as caught:
        caller({SCOPE_ALL_JOBS}).authorize("globex", "payment", allow_unscoped=True)
    assert (caught.value.status, caught.value.code) == (403, "wrong_tenant")


def test_the_cli_token_verifies_at_a_gateway_with_the_same_secret():
    settings = jwt_settings_from_env({"GATEWAY_JWT_SECRET": SECRET})
    token = make_token(SECRET, "acme", ttl=600)

    assert verify(token, settings) == Caller(
        "acme", "queue-pipelines-cli", frozenset({SCOPE_ALL_JOBS})
    )
    assert verify(make_token(SECRET, "acme", scope=None, ttl=600), settings).scopes is None


def test_print_token_refuses_what_the_gateway_would_refuse():
    def printed(env: dict, ttl: int = 600) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = print_token("acme", SCOPE_ALL_JOBS, ttl, out, err, load(env))
        return code, out.getvalue(), err.getvalue()

    code, out, _ = printed({"GATEWAY_JWT_SECRET": SECRET})
    assert code == 0 and verify(out.strip(), jwt_settings_from_env({"GATEWAY_JWT_SECRET": SECRET}))
    code, _, err = printed({"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_MAX_LIFETIME_SECONDS": "60"})
    assert code == 2 and "--ttl 600 is over the 60 s" in err
    code, _, err = printed({"GATEWAY_JWT_SECRET": "short"})
    assert code == 2 and "shorter than 32 bytes" in err


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "GATEWAY_JWT_SECRET is not set"),
        ({"GATEWAY_JWT_ALGORITHM": "none", "GATEWAY_JWT_SECRET": SECRET}, "not supported"),
        ({"GATEWAY_JWT_ALGORITHM": "RS256"}, "GATEWAY_JWT_PUBLIC_KEY"),
        ({"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_UNSCOPED_TOKENS": "maybe"}, "'refuse'"),
    ],
)
def test_jwt_settings_that_cannot_work_name_their_variable(env, names):
    with pytest.raises(GatewayConfigError, match=names):
        jwt_settings_from_env(env)
