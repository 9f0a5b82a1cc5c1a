"""E-mail templates: a subject, a text part and an HTML part per message kind, with jinja2.

HTML is autoescaped (a buyer's name is data, never markup); a variable the context lacks
fails the render with its name instead of leaving a blank in a customer's inbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from queue_pipelines.failures import PermanentError
from queue_pipelines.notifications.tenants import TenantProfile

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATES = (
    "payment_confirmation",
    "payment_failed",
    "refund_issued",
    "nft_delivered",
    "operator_alert",
)

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class RenderedMessage:
    template: str
    subject: str
    text: str
    html: str


def render(template: str, context: dict[str, Any], brand: TenantProfile) -> RenderedMessage:
    """Render the three parts of `template`; a missing variable is a permanent failure."""
    if template not in TEMPLATES:
        raise PermanentError(f"unknown e-mail template {template!r}", code="unknown_template")
    values = {**context, "brand": brand}
    try:
        subject = _environment.get_template(f"{template}.subject.txt").render(values)
        text = _environment.get_template(f"{template}.txt").render(values)
        html = _environment.get_template(f"{template}.html").render(values)
    except jinja2.UndefinedError as exc:
        raise PermanentError(
            f"template {template!r} cannot be rendered: {exc.message} in its context "
            f"(given: {', '.join(sorted(context)) or 'nothing'})",
            code="template_variable_missing",
        ) from None
    # A header cannot hold a line break.
    return RenderedMessage(template, " ".join(subject.split()), text, html)
