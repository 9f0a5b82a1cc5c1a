"""The local SMTP sink of `make run` and `queue-pipelines outbox`."""

from __future__ import annotations

import io

from queue_pipelines.cli import main
from queue_pipelines.notifications.delivery import build_email
from queue_pipelines.notifications.templates import render
from queue_pipelines.notifications.tenants import DEFAULT_PROFILE
from queue_pipelines.sandbox.outbox import list_messages, start_sink
from queue_pipelines.sandbox.servers import free_port
from resources import SmtpResource


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_sink_keeps_each_mail_and_the_cli_lists_and_prints_it(tmp_path):
    outbox = tmp_path / "outbox"
    port = free_port()
    sink = start_sink(outbox, port)
    try:
        smtp = SmtpResource(host="127.0.0.1", port=port, security="none")
        for order in ("1042", "1043"):
            rendered = render(
                "payment_confirmation",
                {"buyer_name": "<b>Ada</b>", "order_id": order, "amount": "25.00 USD", "payment_id": "pi_1"},
                DEFAULT_PROFILE,
            )  # fmt: skip
            smtp.sender().send(
                build_email(rendered, recipient="ada@example.com", sender=smtp.from_address)
            )
    finally:
        sink.stop()

    assert [e.subject for e in list_messages(outbox)] == [
        "Tickets: payment of 25.00 USD received for order 1042",
        "Tickets: payment of 25.00 USD received for order 1043",
    ]
    code, listing, _ = cli("outbox", "--dir", str(outbox))
    assert code == 0
    lines = listing.splitlines()
    assert len(lines) == 2 and "to ada@example.com" in lines[1] and "order 1043" in lines[1]

    code, shown, _ = cli("outbox", "--dir", str(outbox), "show", "2")
    assert code == 0
    assert "Subject: Tickets: payment of 25.00 USD received for order 1043" in shown
    assert "Hello <b>Ada</b>," in shown

    code, html, _ = cli("outbox", "--dir", str(outbox), "show", "2", "--html")
    assert code == 0 and "Hello &lt;b&gt;Ada&lt;/b&gt;," in html

    code, _, err = cli("outbox", "--dir", str(outbox), "show", "nope")
    assert code == 1 and "no message" in err


def test_an_empty_outbox_says_so(tmp_path):
    code, out, _ = cli("outbox", "--dir", str(tmp_path / "none"))
    assert code == 0 and "no mail in" in out
