"""The gateway's per-tenant limits without a server: the settings' grammar (defaults,
per-tenant overrides, each mistake naming its variable), the priority range, and the rate
and daily e-mail quota counted by TenantGate's own Lua scripts on the in-memory intake's
Redis (fakeredis), notification requests counted once per request key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from queue_pipelines.gateway.tenant_limits import (
    DEFAULT_EMAIL_QUOTA,
    DEFAULT_PRIORITY_RANGE,
    DEFAULT_RATE,
    PRIORITY_BOUNDS,
    TenantGate,
    TenantLimits,
    TenantLimitsError,
    TenantRefused,
    seconds_to_utc_midnight,
    tenant_limits_from_env,
)
from tests.support.envelopes import notification, payment


def test_unset_or_blank_settings_are_the_defaults_for_every_tenant():
    for env in ({}, {"GATEWAY_TENANT_RATE_LIMIT": " ", "GATEWAY_TENANT_EMAIL_QUOTA": ""}):
        limits = tenant_limits_from_env(env)
        assert limits == TenantLimits()
        assert limits.rate_for("acme") == DEFAULT_RATE
        assert limits.email_quota_for("acme") == DEFAULT_EMAIL_QUOTA
        assert limits.priority_range_for("acme") == DEFAULT_PRIORITY_RANGE


def test_per_tenant_overrides_apply_to_their_tenant_only():
    limits = tenant_limits_from_env(
        {
            "GATEWAY_TENANT_RATE_LIMIT": "10/second",
            "GATEWAY_TENANT_RATE_LIMITS": "acme=200/second, bravo=off",
            "GATEWAY_TENANT_EMAIL_QUOTA": "off",
            "GATEWAY_TENANT_EMAIL_QUOTAS": "acme=5 bravo=0",
            "GATEWAY_TENANT_PRIORITY_RANGE": " -50 .. -10 ",
            "GATEWAY_TENANT_PRIORITY_RANGES": "acme=-100..20",
        }
    )

    assert [limits.rate_for(t) for t in ("acme", "bravo", "other")] == [
        "200/second",
        "off",
        "10/second",
    ]
    assert [limits.email_quota_for(t) for t in ("acme", "bravo", "other")] == [5, 0, None]
    assert limits.priority_range_for("acme") == (-100, 20)
    assert limits.priority_range_for("other") == (-50, -10)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GATEWAY_TENANT_RATE_LIMIT": "fast"}, "GATEWAY_TENANT_RATE_LIMIT"),
        ({"GATEWAY_TENANT_RATE_LIMITS": "acme=lots"}, r"GATEWAY_TENANT_RATE_LIMITS \(acme\)"),
        ({"GATEWAY_TENANT_EMAIL_QUOTA": "-1"}, "GATEWAY_TENANT_EMAIL_QUOTA"),
        ({"GATEWAY_TENANT_EMAIL_QUOTAS": "acme"}, "is not tenant=value"),
        ({"GATEWAY_TENANT_EMAIL_QUOTAS": "-acme=3"}, "is not tenant=value"),
        ({"GATEWAY_TENANT_EMAIL_QUOTAS": "acme=3,acme=4"}, "named twice"),
        ({"GATEWAY_TENANT_PRIORITY_RANGE": "0-10"}, "is not a range MIN..MAX"),
        ({"GATEWAY_TENANT_PRIORITY_RANGE": "10..0"}, "MIN <= MAX"),
        ({"GATEWAY_TENANT_PRIORITY_RANGES": "acme=-101..0"}, "-100 <= MIN"),
    ],
)
def test_a_setting_that_does_not_parse_names_its_variable(env, named):
    with pytest.raises(TenantLimitsError, match=named):
        tenant_limits_from_env(env)


def test_seconds_to_midnight_utc_round_up_and_are_never_zero():
    assert seconds_to_utc_midnight(datetime(2026, 12, 3, 23, 59, 59, 500_000, tzinfo=UTC)) == 1
    assert seconds_to_utc_midnight(datetime(2026, 12, 3, 0, 0, tzinfo=UTC)) == 86400
    assert seconds_to_utc_midnight(datetime(2026, 12, 3, 12, 0, 0, 1, tzinfo=UTC)) == 43200


def test_a_tenant_stays_in_its_priority_range_and_an_operator_in_the_envelopes(intake):
    gate = TenantGate(TenantLimits(priority_ranges_by_tenant={"acme": (-10, 5)}), intake.client)

    gate.check_priority("acme", 5, operator=False)
    gate.check_priority("other", -100, operator=False)
    with pytest.raises(TenantRefused) as caught:
        gate.check_priority("acme", 6, operator=False)
    assert (caught.value.status, caught.value.extra["code"]) == (403, "priority_not_allowed")
    assert caught.value.extra["allowed_priority"] == {"min": -10, "max": 5}
    gate.check_priority("acme", PRIORITY_BOUNDS[1], operator=True)
    with pytest.raises(TenantRefused):
        gate.check_priority("acme", PRIORITY_BOUNDS[1] + 1, operator=True)


def test_the_rate_is_counted_per_tenant_and_off_counts_nothing(intake):
    gate = TenantGate(TenantLimits(rate="2/minute", rates_by_tenant={"free": "off"}), intake.client)

    gate.hit("acme")
    gate.hit("acme")
    gate.hit("bravo")
    with pytest.raises(TenantRefused) as caught:
        gate.hit("acme")
    assert caught.value.status == 429 and caught.value.extra["code"] == "rate_limited"
    assert 1 <= caught.value.retry_after <= 60
    for _ in range(10):
        gate.hit("free")


def test_the_email_quota_is_per_utc_day_and_a_release_gives_the_request_back(intake):
    now = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
    gate = TenantGate(TenantLimits(email_quota=2), intake.client, intake.keys, clock=lambda: now)

    first = gate.reserve_email("acme")
    gate.reserve_email("acme")
    with pytest.raises(TenantRefused) as caught:
        gate.reserve_email("acme")
    assert caught.value.retry_after == 6 * 3600
    assert caught.value.extra == {"code": "email_quota_exceeded", "quota": 2}
    assert first == intake.keys.email_quota("acme", "2026-12-03")

    gate.release_email(first)
    assert gate.reserve_email("acme") == first
    now = datetime(2026, 12, 4, 0, 0, 1, tzinfo=UTC)
    assert gate.reserve_email("acme") == intake.keys.email_quota("acme", "2026-12-04")


def test_no_quota_reserves_nothing(intake):
    gate = TenantGate(TenantLimits(email_quota=None), intake.client, intake.keys)

    assert gate.reserve_email("acme") is None
    gate.release_email(None)


def test_enqueue_counts_a_new_notification_once_and_never_a_payment(intake):
    gate = TenantGate(TenantLimits(email_quota=1), intake.client, intake.keys)

    first = gate.enqueue(intake, notification("acme", "n1"))
    # The same request again is answered as before, although the quota is used up.
    again = gate.enqueue(intake, notification("acme", "n1"))
    assert (again.entry_id, again.duplicate, first.duplicate) == (first.entry_id, True, False)
    gate.enqueue(intake, payment("acme", "p1"))
    with pytest.raises(TenantRefused):
        gate.enqueue(intake, notification("acme", "n2"))
    assert len(intake.stream_ids("notification")) == 1
