"""Telling people and systems what happened: one Notice as an e-mail and a webhook, each at
most once, and the operators when telling fails for good.

After an effect (a charge, a refund, a mint) telling about it is best effort on top: each
notice is retried with the request's backoff (the senders make one try per call), and a notice
that still fails leaves the effect standing, alerts the operators and is reported in the
request's summary (docs/notifications.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queue_pipelines.failures import ProviderError
from queue_pipelines.ledger import EffectLedger
from queue_pipelines.notifications.delivery import (
    build_email,
    email_key,
    send_email_once,
    send_webhook_once,
    webhook_key,
)
from queue_pipelines.notifications.events import Notice
from queue_pipelines.notifications.templates import render
from queue_pipelines.notifications.tenants import DEFAULT_PROFILE, TenantProfile
from queue_pipelines.providers.smtp import SmtpSender
from queue_pipelines.providers.webhooks import WebhookSender
from queue_pipelines.request_runner import REQUEST_BACKOFF, Backoff, with_backoff

log = logging.getLogger("queue_pipelines.notifications")


@dataclass(frozen=True)
class Notifier:
    smtp: SmtpSender
    webhooks: WebhookSender
    ledger: EffectLedger
    profile_of: Callable[[str], TenantProfile]
    webhook_url_for: Callable[[str, TenantProfile], str | None]
    operator_email: str
    run_id: str
    resend: bool = False
    # Where an e-mail that failed for good after its effect goes: (request, reason, run id),
    # e.g. IntakeStreams.dead_letter_notice. None: the alert and the run's table only.
    dead_letter: Callable[[dict[str, Any], str, str], object] | None = None
    # How a notice after an effect is retried: the effect is done, so the notice alone is
    # tried again, as a request would be (the request's retries would only replay the effect).
    backoff: Backoff = REQUEST_BACKOFF

    def email(self, notice: Notice) -> dict[str, Any]:
        """Send the notice's e-mail unless it was sent; raises ProviderError if it cannot."""
        if not notice.recipient:
            return {"email": f"skipped: no e-mail address is known for {notice.template}"}
        profile = self.profile_of(notice.tenant_id)
        rendered = render(notice.template, notice.context, profile)
        message = build_email(
            rendered,
            recipient=notice.recipient,
            recipient_name=notice.recipient_name,
            sender=self.smtp.from_address,
            reply_to=str(profile.support_email),
        )
        delivery = send_email_once(
            self.smtp,
            self.ledger,
            message,
            key=email_key(notice.tenant_id, notice.idempotency_key, notice.template),
            run_id=self.run_id,
            resend=self.resend,
        )
        return {"email": "sent earlier" if delivery.replayed else "sent"}

    def webhook(self, notice: Notice) -> dict[str, Any]:
        url = self.webhook_url_for(notice.webhook_kind, self.profile_of(notice.tenant_id))
        if not url:
            return {"webhook": f"skipped: no {notice.webhook_kind} endpoint is configured"}
        delivery = send_webhook_once(
            self.webhooks,
            self.ledger,
            url=url,
            event_type=notice.event_type,
            data=notice.event_data,
            key=webhook_key(notice.tenant_id, notice.idempotency_key, notice.event_type),
            run_id=self.run_id,
            resend=self.resend,
        )
        return {"webhook": "sent earlier" if delivery.replayed else "sent"}

    def tell(self, notice: Notice, effect: str) -> dict[str, Any]:
        """E-mail and webhook after `effect` (e.g. "payment pi_123 succeeded"), which stands
        whatever happens here. A failure for good alerts the operators and is reported."""
        told: dict[str, Any] = {}
        for what, send in (
            (f"e-mail {notice.template}", self.email),
            (f"webhook {notice.event_type}", self.webhook),
        ):
            # Whatever fails here, building the message (a template, a header) as much as
            # sending it, is a failed notice, never a failed effect: the effect stands.
            tried = with_backoff(lambda send=send: send(notice), self.backoff)
            if tried.error is None:
                told.update(tried.value)
                continue
            exc = tried.error
            if not isinstance(exc, ProviderError):
                log.error("%s for %s raised", what, notice.idempotency_key, exc_info=exc)
            reason = f"{what} failed: {_describe(exc)}"
            told.setdefault("notification_failed", [])
            told["notification_failed"].append(reason)
            self.alert_operators(
                summary=f"{reason}; {effect}, and stands",
                details=(
                    f"{effect}, and stands: it is not undone or repeated. Fix the cause, "
                    f"then re-execute run {self.run_id} with resend: true in its op "
                    "config (the effect is not repeated; the notices are sent)."
                ),
                tenant_id=notice.tenant_id,
            )
            if send == self.email and notice.recipient:
                self._dead_letter_email(notice, f"{reason}, after {effect}")
        if "notification_failed" in told:
            told["notification_failed"] = "; ".join(told["notification_failed"])
        return told

    def _dead_letter_email(self, notice: Notice, reason: str) -> None:
        """The failed e-mail as a dead letter of its own: the `notification` request that
        sends it again, for an operator to fix (`dlq replay --payload`) and replay."""
        if self.dead_letter is None:
            return
        try:
            self.dead_letter(resend_request(notice), reason, self.run_id)
        except Exception as exc:  # noqa: BLE001 - the alert and the run's table still say it
            log.error("the failed %s e-mail could not be dead-lettered: %s", notice.template, exc)

    def alert_operators(self, *, summary: str, details: str, tenant_id: str) -> None:
        alert_operators(
            self.smtp,
            self.operator_email,
            summary=summary,
            details=details,
            run_id=self.run_id,
            tenant_id=tenant_id,
        )


def resend_request(notice: Notice) -> dict[str, Any]:
    """The `notification` request (an envelope, as the intake takes it) that sends the notice's
    e-mail again, under a key of its own derived from the notice's."""
    return {
        "type": "notification",
        "version": 1,
        "tenant_id": notice.tenant_id,
        "idempotency_key": f"{notice.idempotency_key[:200]}.{notice.template}",
        "payload": {
            "template": notice.template,
            "recipient": notice.recipient,
            "context": notice.context,
        },
    }


def _describe(exc: Exception) -> str:
    if isinstance(exc, ProviderError):
        return exc.reason
    return f"unexpected {type(exc).__name__}: {exc}"


def alert_operators(
    smtp: SmtpSender,
    operator_email: str,
    *,
    summary: str,
    details: str,
    run_id: str,
    tenant_id: str,
) -> None:
    """Best effort: the run's own record is the record; the alert points an operator at it."""
    log.error("operator alert: %s: %s", summary, details)
    try:
        rendered = render(
            "operator_alert",
            {"summary": summary, "details": details, "run_id": run_id, "tenant_id": tenant_id},
            DEFAULT_PROFILE,
        )
        smtp.send(build_email(rendered, recipient=operator_email, sender=smtp.from_address))
    except Exception as exc:
        log.error("the operator alert could not be e-mailed to %s: %s", operator_email, exc)
