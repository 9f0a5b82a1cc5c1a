"""Sending each e-mail and webhook at most once per request, through the effect ledger.

Keys: `email:<tenant>:<idempotency key>:<template>` and `webhook:<tenant>:<idempotency
key>:<event type>`. A key already `done` is not sent again (op retries, run retries, a full
re-execution), unless the run asks for a resend; a resend is keyed by its run, so it too
happens at most once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from queue_pipelines.effects import act_again, act_once
from queue_pipelines.failures import PermanentError, ProviderError
from queue_pipelines.intake.text_fields import display_name, mail_address
from queue_pipelines.ledger import Claim, EffectLedger
from queue_pipelines.notifications.templates import RenderedMessage
from queue_pipelines.providers.smtp import SmtpSender
from queue_pipelines.providers.webhooks import WebhookSender


@dataclass(frozen=True)
class Delivery:
    effect_key: str
    result: dict[str, Any]
    replayed: bool  # True: an earlier attempt delivered it, nothing was sent now


def email_key(tenant_id: str, idempotency_key: str, template: str) -> str:
    return f"email:{tenant_id}:{idempotency_key}:{template}"


def webhook_key(tenant_id: str, idempotency_key: str, event_type: str) -> str:
    return f"webhook:{tenant_id}:{idempotency_key}:{event_type}"


def webhook_id_for(effect_key: str) -> str:
    """Stable across attempts and resends, as the spec wants: receivers de-duplicate by it.
    Hex only, since the id is part of the dot-delimited signed content."""
    return "msg_" + hashlib.sha256(effect_key.encode()).hexdigest()[:32]


def build_email(
    rendered: RenderedMessage,
    *,
    recipient: str,
    sender: str,
    reply_to: str | None = None,
    recipient_name: str | None = None,
) -> EmailMessage:
    """The message to `recipient`. The address and the name go through the intake's own
    checks (intake/text_fields.py), so whatever the intake accepted builds, an
    internationalized domain in its IDNA form; anything else raises ValueError saying why.
    A domain without a dot passes here: the operators' address may be an internal one.

    The name goes in as an Address, not through formataddr: Python re-folds a parsed
    `"Zoë, x@evil.example" <a@b>` into an encoded word followed by the bare `x@evil.example`,
    which a mail client then shows as a second recipient."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(
        display_name=display_name(recipient_name) or "",
        addr_spec=mail_address(recipient, globally_deliverable=False),
    )
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="queue-pipelines.invalid")
    message["X-Queue-Pipelines-Template"] = rendered.template
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def event_body(event_type: str, data: dict[str, Any]) -> bytes:
    """The Standard Webhooks payload shape: type, timestamp, data; minified JSON."""
    payload = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _deliver_once(
    ledger: EffectLedger,
    key: str,
    kind: str,
    run_id: str,
    *,
    resend: bool,
    resumable: bool,
    send,
) -> Delivery:
    if resend:
        key = f"{key}:resend:{run_id}"

    def unknown(_claim: Claim) -> None:
        raise PermanentError(
            f"an earlier attempt for {key} ended without recording whether the message went "
            "out; to send it anyway, re-execute with resend: true in the step's config",
            code="needs_resend_decision",
        )

    effect = act_once(
        ledger,
        key,
        kind,
        run_id,
        send,
        in_doubt=act_again if resumable else unknown,
        # The sender says the server did not take the message: nothing was delivered.
        refusals=(ProviderError,),
    )
    return Delivery(key, effect.result, replayed=effect.replayed)


def send_email_once(
    smtp: SmtpSender,
    ledger: EffectLedger,
    message: EmailMessage,
    *,
    key: str,
    run_id: str,
    resend: bool = False,
) -> Delivery:
    """SMTP has no idempotency key of its own: an attempt whose outcome is unknown is not
    repeated on a guess (see `_deliver_once`)."""

    def send() -> dict[str, Any]:
        smtp.send(message)
        return {
            "message_id": message["Message-ID"],
            "to": message["To"],
            "subject": message["Subject"],
        }

    return _deliver_once(ledger, key, "email", run_id, resend=resend, resumable=False, send=send)


def send_webhook_once(
    webhooks: WebhookSender,
    ledger: EffectLedger,
    *,
    url: str,
    event_type: str,
    data: dict[str, Any],
    key: str,
    run_id: str,
    resend: bool = False,
) -> Delivery:
    """An attempt whose outcome is unknown is resumed: it carries the same webhook-id, which
    the receiver de-duplicates."""
    webhook_id = webhook_id_for(key)

    def send() -> dict[str, Any]:
        status = webhooks.deliver(url, webhook_id, event_body(event_type, data))
        return {"webhook_id": webhook_id, "event_type": event_type, "status": status}

    return _deliver_once(ledger, key, "webhook", run_id, resend=resend, resumable=True, send=send)
