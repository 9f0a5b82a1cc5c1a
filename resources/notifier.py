"""The notifier resource: the SMTP server, the webhook endpoints and the notification settings
in one, so that an op takes one resource and gets the Notifier of its run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from queue_pipelines.ledger import EffectLedger
from queue_pipelines.notifications.events import explorer_link
from queue_pipelines.notifications.notifier import Notifier, alert_operators
from resources.notification_settings import NotificationSettingsResource
from resources.smtp import SmtpResource
from resources.webhooks import WebhookResource


class NotifierResource(dg.ConfigurableResource):
    """Who is told what, and how. Each part keeps its own configuration (SMTP_*, WEBHOOK_*,
    QP_TENANTS_FILE, OPERATOR_EMAIL, EXPLORER_URL_TEMPLATE; queue_pipelines/deployment.py)."""

    smtp: SmtpResource
    webhooks: WebhookResource
    notification_settings: NotificationSettingsResource

    def for_run(
        self,
        run_id: str,
        ledger: EffectLedger,
        *,
        resend: bool = False,
        dead_letter: Callable[[dict[str, Any], str, str], object] | None = None,
    ) -> Notifier:
        """The run's Notifier: each e-mail and webhook at most once through `ledger`, unless
        an operator asked to `resend`; an e-mail that fails for good after its effect goes to
        `dead_letter` (IntakeStreams.dead_letter_notice)."""
        return Notifier(
            smtp=self.smtp.sender(),
            webhooks=self.webhooks.sender(),
            ledger=ledger,
            profile_of=self.notification_settings.profile,
            webhook_url_for=self.webhooks.url_for,
            operator_email=self.notification_settings.operator_email,
            run_id=run_id,
            resend=resend,
            dead_letter=dead_letter,
        )

    def explorer_link(self, address: str) -> str:
        """The operator's explorer page of a Solana address (a minted ticket)."""
        return explorer_link(self.notification_settings.explorer_url_template, address)

    def alert_operators(self, *, summary: str, details: str, run_id: str, tenant_id: str) -> None:
        """E-mail the operators, best effort, outside any batch (e.g. a scheduled check)."""
        alert_operators(
            self.smtp.sender(),
            self.notification_settings.operator_email,
            summary=summary,
            details=details,
            run_id=run_id,
            tenant_id=tenant_id,
        )
