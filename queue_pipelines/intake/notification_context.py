"""What a producer may put in a notification's `context`, per template (docs/notifications.md).

Every value lands in mail sent in the platform's name, so each template declares the fields
a producer may set, each with a kind and a maximum length; anything else is refused at
intake: an unknown field, a value that is not a string (or null where allowed), an over-long
one, a control character, and in text anything a mail client would turn into a link (a
scheme such as `https://` or `mailto:`, `www.`, a domain name such as `example.com`, an
e-mail address). Links in platform mail are built by the platform: `nft_delivered` takes a
`mint_address` and the job links it with the operator's EXPLORER_URL_TEMPLATE.

Fields may be left out: a template variable missing at send time still fails the request,
naming it. Imports nothing from Dagster (part of the wire format).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContextField:
    kind: str  # "text", "identifier", "stripe:<prefix>", "solana_address"
    max_length: int
    nullable: bool = False


_TEXT_KINDS = ("text", "identifier")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STRIPE_ID = re.compile(r"^[A-Za-z0-9_]+$")

BUYER_NAME = ContextField("text", 100)
ORDER_ID = ContextField("identifier", 64)
AMOUNT = ContextField("text", 32)  # as written for people: "25.00 USD"
PAYMENT_ID = ContextField("stripe:pi_", 255)

TEMPLATE_FIELDS: dict[str, dict[str, ContextField]] = {
    "payment_confirmation": {
        "buyer_name": BUYER_NAME,
        "order_id": ORDER_ID,
        "amount": AMOUNT,
        "payment_id": PAYMENT_ID,
    },
    "payment_failed": {
        "buyer_name": BUYER_NAME,
        "order_id": ORDER_ID,
        "amount": AMOUNT,
        "reason": ContextField("text", 300),
    },
    "refund_issued": {
        "buyer_name": BUYER_NAME,
        # null: the mail names the payment instead of an order.
        "order_id": ContextField("identifier", 64, nullable=True),
        "payment_id": PAYMENT_ID,
        "amount": AMOUNT,
        "refund_id": ContextField("stripe:re_", 255),
    },
    "nft_delivered": {
        "buyer_name": BUYER_NAME,
        "order_id": ORDER_ID,
        "event": ContextField("text", 200),
        "seat": ContextField("text", 64),
        "wallet": ContextField("solana_address", 44),
        # The job turns it into the template's `explorer_url` (EXPLORER_URL_TEMPLATE).
        "mint_address": ContextField("solana_address", 44),
    },
}

# Dots that IDNA treats as label separators, besides ".".
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_SCHEMES = (
    "mailto|javascript|vbscript|data|file|tel|sms|callto|skype|ftp|sftp|news|irc|ircs|"
    "ldap|git|ssh|telnet|smb|market|intent|whatsapp|tg|geo|maps"
)
_LINKS = re.compile(
    r"://"  # any scheme's URL
    rf"|(?<![\w.+-])(?:{_SCHEMES})\s*:"  # schemes without a //
    r"|(?<![\w-])www\d{0,3}\."
    # a host name: labels and a TLD of letters (example.com, xn--...; node.js too)
    r"|(?<![\w-])(?:[^\W_](?:[\w-]*[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[\w-]+)(?![\w-])"
    r"|[^\s@]@[^\s@]",  # an e-mail address (mail clients link it)
    re.IGNORECASE,
)


def link_in(text: str) -> bool:
    """True when a mail client could render part of `text` as a link. Checked on the NFKC
    form without format characters, so full-width letters, ideographic dots and zero-width
    spaces inside a host name do not hide it."""
    folded = unicodedata.normalize("NFKC", text).translate(_DOTS)
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    return _LINKS.search(folded) is not None


def has_control(text: str) -> bool:
    return any(
        unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
        for ch in text
    )


def field_problem(spec: ContextField, value: Any) -> str | None:
    """Why `value` may not fill a field of `spec`, or None."""
    if value is None:
        return None if spec.nullable else "must be a string, not null"
    if not isinstance(value, str):
        allowed = "a string or null" if spec.nullable else "a string"
        return f"must be {allowed}, not {type(value).__name__}"
    if len(value) > spec.max_length:
        return f"over {spec.max_length} characters"
    if has_control(value):
        return "contains a control character"
    if spec.kind == "identifier" and not _IDENTIFIER.match(value):
        return "must be letters, digits and . _ - (starting with a letter or digit)"
    if spec.kind.startswith("stripe:"):
        prefix = spec.kind.removeprefix("stripe:")
        if not value.startswith(prefix) or not _STRIPE_ID.match(value):
            return f"must be a Stripe id {prefix}..."
    if spec.kind == "solana_address":
        from queue_pipelines.intake.payloads import solana_address

        try:
            solana_address(value)
        except ValueError as exc:
            return str(exc)
    if spec.kind in _TEXT_KINDS and link_in(value):
        return (
            "looks like a link (a URL, www., a domain name or an e-mail address); "
            "platform mail carries no links a producer wrote"
        )
    return None


def context_problems(template: str, context: dict[str, Any]) -> list[str]:
    """`field: why` for each value of `context` that `template` does not accept."""
    fields = TEMPLATE_FIELDS.get(template)
    if fields is None:
        return []  # an unknown template is refused on its own
    problems = []
    for name, value in context.items():
        spec = fields.get(name)
        if spec is None:
            problems.append(
                f"{name}: not a field of template {template!r} (it takes {', '.join(fields)})"
            )
            continue
        problem = field_problem(spec, value)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems
