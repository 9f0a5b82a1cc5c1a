"""Bearer JWTs for POST /v1/jobs: one pinned algorithm, `exp` required within a maximum
lifetime, a tenant claim, and a scope per job type (a token without a scope claim writes
nothing unless the operator allows it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from queue_pipelines.gateway.config import JWTSettings
from queue_pipelines.intake.registry import JOBS_WRITE_SCOPE, SPECS

SCOPE_ALL_JOBS = JOBS_WRITE_SCOPE
# May ask for any priority the envelope allows; tenants get the range the operator set.
SCOPE_OPERATOR = "jobs:operator"


class AuthError(Exception):
    """`status` is 401 (who are you?) or 403 (not allowed); `reason` is safe to return;
    `code` names the reason in a word, for gateway_auth_refusals_total."""

    def __init__(self, status: int, reason: str, code: str = "invalid_token"):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Caller:
    tenant: str
    subject: str | None
    scopes: frozenset[str] | None  # None: the token carries no scope claim

    def authorize(self, tenant_id: str, job_type: str, allow_unscoped: bool) -> None:
        if tenant_id != self.tenant:
            raise AuthError(
                403,
                f"token is for tenant {self.tenant!r}, the request for {tenant_id!r}",
                "wrong_tenant",
            )
        spec = SPECS[job_type]
        wanted = spec.scope
        if spec.scope_by_name:  # neither jobs:write nor an unscoped token includes it
            if wanted not in (self.scopes or ()):
                raise AuthError(
                    403,
                    f"token lacks the scope {wanted!r}: {job_type} requests need it by name "
                    f"({SCOPE_ALL_JOBS!r} and tokens without a scope claim do not include it)",
                    "missing_scope",
                )
            return
        if self.scopes is None:
            # Writes nothing unless the operator opted in (GATEWAY_JWT_UNSCOPED_TOKENS=allow).
            if allow_unscoped:
                return
            raise AuthError(
                403,
                f"token has no scope claim: it needs the scope {wanted!r} (or {SCOPE_ALL_JOBS!r})",
                "missing_scope",
            )
        if not self.scopes or not ({SCOPE_ALL_JOBS, wanted} & self.scopes):
            raise AuthError(
                403, f"token lacks the scope {wanted!r} (or {SCOPE_ALL_JOBS!r})", "missing_scope"
            )

    @property
    def operator(self) -> bool:
        return SCOPE_OPERATOR in (self.scopes or ())


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(401, "missing bearer token (Authorization: Bearer <JWT>)", "missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "Authorization must be 'Bearer <JWT>'", "malformed_header")
    return token.strip()


def verify(token: str, settings: JWTSettings) -> Caller:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError(401, "malformed token", "malformed_token") from None
    # Checked before decoding so the answer says why; jwt.decode pins it again below.
    if header.get("alg") != settings.algorithm:
        raise AuthError(
            401,
            f"token algorithm {header.get('alg')!r} is not accepted ({settings.algorithm})",
            "algorithm",
        )
    try:
        claims = _decode(token, settings)
    except (OverflowError, ValueError, TypeError):  # times no clock can hold
        raise AuthError(401, "invalid token: unreadable time claims", "invalid_claims") from None
    # PyJWT checks `exp` after int(), which lets the string "9999999999" through; RFC 7519
    # makes these NumericDates, JSON numbers.
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthError(
                401,
                f"the {name!r} claim must be a number (seconds since the epoch)",
                "invalid_claims",
            )
    _refuse_long_lived(claims, settings)
    tenant = claims["tenant"]
    if not isinstance(tenant, str) or not tenant:
        raise AuthError(401, "the 'tenant' claim must be a non-empty string", "invalid_claims")
    scope = claims.get("scope")
    scopes = None if scope is None else frozenset(str(scope).split())
    return Caller(tenant=tenant, subject=claims.get("sub"), scopes=scopes)


def _refuse_long_lived(claims: dict, settings: JWTSettings) -> None:
    """A token lives exp - iat, or exp - now without `iat`; past the configured maximum it is
    refused, so that a stolen token (or an `exp` of 1e300) is not a key for ever. Compared,
    never subtracted: Python compares any int with any float exactly, without overflow."""
    limit = settings.max_lifetime_seconds
    if "iat" in claims:
        too_long = claims["exp"] > claims["iat"] + limit
        measured = "exp - iat"
    else:
        too_long = claims["exp"] > time.time() + limit + settings.leeway_seconds
        measured = "exp - now, the token having no 'iat'"
    if too_long:
        raise AuthError(
            401,
            f"token lives longer than the {limit} s this gateway accepts ({measured})",
            "too_long_lived",
        )


def _decode(token: str, settings: JWTSettings) -> dict:
    try:
        return jwt.decode(
            token,
            settings.key,
            algorithms=[settings.algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "tenant"], "verify_aud": settings.audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired", "expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, f"token lacks the {exc.claim!r} claim", "missing_claim") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "token signature does not verify", "bad_signature") from None
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None
