"""Per-tenant limits at the gateway (docs/gateway.md, "Tenant limits"), each shared by every
gateway replica through Redis:

- a request rate per tenant (a moving window from the `limits` library, as the provider
  guard's): past it 429 with `Retry-After`;
- a daily e-mail quota: notification requests a tenant may submit per UTC day; past it 429
  with `Retry-After` (the seconds to midnight UTC). Refused here rather than dead-lettered
  when the job runs, so the tenant learns it at once and nothing waits in the intake only to
  fail. A repeat of an accepted request (same idempotency key) is not counted again;
- the range of `priority` a tenant may ask for (default -100..0: a tenant may lower its own
  requests, never raise them above everyone's default); a token with the operator scope may
  use the whole -100..100. Past it 403 naming the range.

Each has a default for every tenant and per-tenant overrides, from the environment
(`tenant_limits_from_env`).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from queue_pipelines.intake.keys import IntakeKeys
from queue_pipelines.intake.registry import SPECS
from queue_pipelines.intake.streams import IntakeStreams
from queue_pipelines.providers.guard import OFF, check_rate

DEFAULT_RATE = "50/second"
DEFAULT_EMAIL_QUOTA = 1000  # notification requests per tenant per UTC day
# The envelope's own range; a tenant's default stops at the envelope's default priority, 0.
PRIORITY_BOUNDS = (-100, 100)
DEFAULT_PRIORITY_RANGE = (-100, 0)
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")

# KEYS[1] the tenant's counter for the day. ARGV: quota, seconds to keep the counter.
# Returns the count after this request, or -1 when the quota is used up (nothing counted).
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return -1 end
used = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return used
"""
_RELEASE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class TenantLimits:
    """`rate` / `email_quota` / `priority_range` for every tenant, `*_by_tenant` overrides.
    A rate of "off" or a quota of None is no limit."""

    rate: str = DEFAULT_RATE
    rates_by_tenant: dict[str, str] = field(default_factory=dict)
    email_quota: int | None = DEFAULT_EMAIL_QUOTA
    email_quotas_by_tenant: dict[str, int | None] = field(default_factory=dict)
    priority_range: tuple[int, int] = DEFAULT_PRIORITY_RANGE
    priority_ranges_by_tenant: dict[str, tuple[int, int]] = field(default_factory=dict)

    def rate_for(self, tenant: str) -> str:
        return self.rates_by_tenant.get(tenant, self.rate)

    def email_quota_for(self, tenant: str) -> int | None:
        return self.email_quotas_by_tenant.get(tenant, self.email_quota)

    def priority_range_for(self, tenant: str) -> tuple[int, int]:
        return self.priority_ranges_by_tenant.get(tenant, self.priority_range)


class TenantLimitsError(ValueError):
    """A setting that does not parse; the message names the variable."""


def _rate(name: str, raw: str) -> str:
    try:
        return check_rate(raw.strip())
    except ValueError as exc:
        raise TenantLimitsError(f"{name}: {exc}") from None


def _quota(name: str, raw: str) -> int | None:
    raw = raw.strip()
    if raw.lower() == OFF:
        return None
    if not re.fullmatch(r"\d+", raw):
        raise TenantLimitsError(
            f"{name}: {raw!r} is not a number of e-mails per day (0 or more), or {OFF!r}"
        )
    return int(raw)


def _priority_range(name: str, raw: str) -> tuple[int, int]:
    match = _RANGE.match(raw)
    low, high = PRIORITY_BOUNDS
    if not match:
        raise TenantLimitsError(f"{name}: {raw!r} is not a range MIN..MAX (e.g. -100..0)")
    lowest, highest = int(match[1]), int(match[2])
    if not low <= lowest <= highest <= high:
        raise TenantLimitsError(
            f"{name}: {raw!r} must be MIN..MAX with {low} <= MIN <= MAX <= {high}"
        )
    return lowest, highest


def _per_tenant(name: str, raw: str | None, parse_value) -> dict:
    """`acme=200/second,bravo=off` (commas or whitespace between the pairs)."""
    out = {}
    for pair in re.split(r"[\s,]+", (raw or "").strip()):
        if not pair:
            continue
        tenant, sep, value = pair.partition("=")
        if not sep or not _TENANT.match(tenant):
            raise TenantLimitsError(
                f"{name}: {pair!r} is not tenant=value (a tenant id, '=', the value)"
            )
        if tenant in out:
            raise TenantLimitsError(f"{name}: tenant {tenant!r} is named twice")
        out[tenant] = parse_value(f"{name} ({tenant})", value)
    return out


def tenant_limits_from_env(env: dict[str, str]) -> TenantLimits:
    def setting(name: str, default: str) -> str:
        value = env.get(name)
        return default if value is None or not value.strip() else value

    return TenantLimits(
        rate=_rate("GATEWAY_TENANT_RATE_LIMIT", setting("GATEWAY_TENANT_RATE_LIMIT", DEFAULT_RATE)),
        rates_by_tenant=_per_tenant(
            "GATEWAY_TENANT_RATE_LIMITS", env.get("GATEWAY_TENANT_RATE_LIMITS"), _rate
        ),
        email_quota=_quota(
            "GATEWAY_TENANT_EMAIL_QUOTA",
            setting("GATEWAY_TENANT_EMAIL_QUOTA", str(DEFAULT_EMAIL_QUOTA)),
        ),
        email_quotas_by_tenant=_per_tenant(
            "GATEWAY_TENANT_EMAIL_QUOTAS", env.get("GATEWAY_TENANT_EMAIL_QUOTAS"), _quota
        ),
        priority_range=_priority_range(
            "GATEWAY_TENANT_PRIORITY_RANGE",
            setting("GATEWAY_TENANT_PRIORITY_RANGE", "{}..{}".format(*DEFAULT_PRIORITY_RANGE)),
        ),
        priority_ranges_by_tenant=_per_tenant(
            "GATEWAY_TENANT_PRIORITY_RANGES",
            env.get("GATEWAY_TENANT_PRIORITY_RANGES"),
            _priority_range,
        ),
    )


class TenantRefused(Exception):
    """A request over one of its tenant's limits; `reason` is safe to return."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None, **extra):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.extra = extra


def seconds_to_utc_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class TenantGate:
    """The three checks of one gateway, against the Redis every replica shares."""

    def __init__(
        self,
        limits: TenantLimits,
        client: redis.Redis,
        keys: IntakeKeys | None = None,
        clock=lambda: datetime.now(UTC),
    ):
        self.limits = limits
        self.client = client
        self.keys = keys or IntakeKeys()
        self.clock = clock
        self._limiter = MovingWindowRateLimiter(
            RedisStorage(
                "redis://",
                connection_pool=client.connection_pool,
                key_prefix=self.keys.rate_limits,
            )
        )
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    # rate
    def hit(self, tenant: str) -> None:
        """Count one request of `tenant`; TenantRefused(429) when it is over its rate."""
        rate = self.limits.rate_for(tenant)
        if rate == OFF:
            return
        item = parse(rate)
        if self._limiter.hit(item, "gateway-tenant", tenant):
            return
        reset_at, _remaining = self._limiter.get_window_stats(item, "gateway-tenant", tenant)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TenantRefused(
            429,
            f"tenant {tenant!r} is over its request rate ({rate}, counted across every "
            f"gateway replica): retry after {retry_after} s",
            retry_after=retry_after,
            code="rate_limited",
            limit=rate,
        )

    # priority
    def check_priority(self, tenant: str, priority: int, operator: bool) -> None:
        lowest, highest = PRIORITY_BOUNDS if operator else self.limits.priority_range_for(tenant)
        if not lowest <= priority <= highest:
            raise TenantRefused(
                403,
                f"priority {priority} is outside the range tenant {tenant!r} may use: "
                f"{lowest}..{highest} (the operator sets it; GATEWAY_TENANT_PRIORITY_RANGES)",
                code="priority_not_allowed",
                allowed_priority={"min": lowest, "max": highest},
            )

    # e-mail quota
    def quota_key(self, tenant: str, day: str) -> str:
        return self.keys.email_quota(tenant, day)

    def reserve_email(self, tenant: str) -> str | None:
        """Count one notification request of `tenant` today; returns the counter's key (to
        `release_email` if the request is not enqueued after all), or None when there is no
        quota. TenantRefused(429) when today's quota is used up."""
        quota = self.limits.email_quota_for(tenant)
        if quota is None:
            return None
        now = self.clock()
        key = self.quota_key(tenant, now.strftime("%Y-%m-%d"))
        # Kept a day past its own so that a clock a little behind still finds it.
        if self._reserve(keys=[key], args=[quota, 2 * 86400]) < 0:
            retry_after = seconds_to_utc_midnight(now)
            raise TenantRefused(
                429,
                f"tenant {tenant!r} has used its daily e-mail quota ({quota} notification "
                f"requests per UTC day): email_quota_exceeded; it resets at 00:00 UTC, in "
                f"{retry_after} s",
                retry_after=retry_after,
                code="email_quota_exceeded",
                quota=quota,
            )
        return key

    def release_email(self, key: str | None) -> None:
        if key is not None:
            self._release(keys=[key])

    def enqueue(self, intake: IntakeStreams, envelope):
        """`intake.enqueue_once(envelope)`, counting a notification request against its
        tenant's daily quota: only a new entry counts (a repeat of an accepted key is answered
        as before, even at the quota)."""
        if not SPECS[envelope.type].request_is_email or intake.request_recorded(
            envelope.request_key
        ):
            return intake.enqueue_once(envelope)
        key = self.reserve_email(envelope.tenant_id)
        try:
            result = intake.enqueue_once(envelope)
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                self.release_email(key)
            raise
        if result.duplicate:  # a concurrent request with the same key came first
            self.release_email(key)
        return result
