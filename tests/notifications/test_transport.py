"""SmtpResource against a real SMTP server (aiosmtpd), WebhookResource against a real HTTP
receiver on loopback: each call is one try, its failure classified transient or permanent,
and what the receiver sees. Retrying is the request's backoff's
(tests/request_runner/test_retries.py)."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.providers.guard import CircuitOpen
from queue_pipelines.providers.smtp import SmtpSender
from queue_pipelines.providers.webhook_signing import new_secret
from queue_pipelines.sandbox.servers import free_port
from resources import SmtpResource, WebhookResource
from tests.support.mail_sink import MailSink
from tests.support.tcp_cut import TcpCut
from tests.support.webhook_receiver import WebhookReceiver


def message(to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["To"] = to
    mail["Subject"] = "hello"
    mail.set_content("text part")
    return mail


def smtp_at(port: int, **overrides) -> SmtpSender:
    settings = {"security": "none", "timeout_seconds": 5}
    return SmtpResource(host="127.0.0.1", port=port, **{**settings, **overrides}).sender()


@pytest.fixture
def own_sink(tmp_path):
    sink = MailSink(tmp_path / "outbox").start()
    yield sink
    sink.stop()


def test_smtp_down_is_one_transient_failure():
    with pytest.raises(TransientError, match="could not reach the SMTP server"):
        smtp_at(free_port()).send(message("nobody@example.com"))


def test_550_fails_at_once_with_the_servers_reply(own_sink):
    own_sink.handler.refuse_next_rcpt("550 5.1.1 <gone@example.com>: Recipient address rejected")
    with pytest.raises(PermanentError) as caught:
        smtp_at(own_sink.port).send(message("gone@example.com"))
    assert "550 5.1.1 <gone@example.com>: Recipient address rejected" in caught.value.reason
    assert own_sink.handler.rcpt_replies == []  # asked once: no retry
    assert own_sink.to("gone@example.com") == []


def test_4xx_is_one_transient_failure_the_sender_does_not_retry(own_sink):
    own_sink.handler.refuse_next_rcpt("451 4.3.0 try again later", times=2)
    with pytest.raises(TransientError, match="451 4.3.0 try again later"):
        smtp_at(own_sink.port).send(message("later@example.com"))
    assert own_sink.handler.rcpt_replies == ["451 4.3.0 try again later"]  # asked once
    assert own_sink.to("later@example.com") == []


@pytest.fixture
def receiver():
    with WebhookReceiver(new_secret()) as server:
        yield server


def webhooks_for(receiver: WebhookReceiver, **overrides) -> WebhookResource:
    settings = {"secret": receiver.secret, "timeout_seconds": 5}
    return WebhookResource(**{**settings, **overrides})


def test_webhook_2xx_is_delivered_signed(receiver):
    status = webhooks_for(receiver).sender().deliver(receiver.url, "msg_abc", b'{"type":"x"}')
    assert status == 200
    [delivery] = receiver.received
    assert delivery.signature_valid and delivery.headers["webhook-id"] == "msg_abc"
    assert list(receiver.processed) == ["msg_abc"]


def test_webhook_400_is_not_retried(receiver):
    receiver.answer(400)
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        webhooks_for(receiver).sender().deliver(receiver.url, "msg_bad", b"{}")
    assert len(receiver.received) == 1
    assert "not retried" in caught.value.reason


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_webhook_retryable_status_is_one_transient_failure(receiver, status):
    receiver.answer(status, status)
    with pytest.raises(TransientError, match=f"HTTP {status}") as caught:
        webhooks_for(receiver).sender().deliver(receiver.url, "msg_retry", b"{}")
    assert caught.value.code == f"http_{status}"
    assert [r.status for r in receiver.received] == [status]  # one try: the sender never retries


def test_webhook_network_error_is_one_transient_failure():
    url = f"http://127.0.0.1:{free_port()}/hooks"
    with pytest.raises(TransientError, match="msg_down") as caught:
        WebhookResource(secret=new_secret()).sender().deliver(url, "msg_down", b"{}")
    assert caught.value.code == "connection"


def test_the_url_in_a_failure_never_shows_its_query_string(receiver):
    receiver.answer(404)
    with pytest.raises(PermanentError) as caught:
        webhooks_for(receiver).sender().deliver(receiver.url + "?token=s3cret", "msg_q", b"{}")
    assert "s3cret" not in caught.value.reason
    assert receiver.url in caught.value.reason


def test_a_malformed_secret_fails_at_once_without_a_request(receiver):
    with pytest.raises(PermanentError, match="WEBHOOK_SECRET is not usable"):
        webhooks_for(receiver, secret="not-a-whsec-secret").sender().deliver(
            receiver.url, "msg_x", b"{}"
        )
    assert receiver.received == []


@pytest.fixture(scope="module")
def tls_certificates(tmp_path_factory):
    """A CA of the test's own and a certificate for 127.0.0.1 (trustme)."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context, str(ca_file)


def test_starttls_is_required_and_used(tmp_path, tls_certificates):
    from aiosmtpd.controller import Controller

    from tests.support.mail_sink import ScriptedHandler

    server_context, ca_file = tls_certificates
    handler = ScriptedHandler(tmp_path / "outbox")
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,
    )
    controller.start()
    try:
        with pytest.raises(PermanentError, match="530"):  # plain text refused by the server
            smtp_at(port).send(message("plain@example.com"))
        with pytest.raises(PermanentError, match="certificate not trusted"):
            smtp_at(port, security="starttls").send(message("untrusted@example.com"))
        smtp_at(port, security="starttls", tls_ca_file=ca_file).send(message("tls@example.com"))
    finally:
        controller.stop()
    assert [str(m["To"]) for m in handler.received] == ["tls@example.com"]


def test_implicit_tls(tmp_path, tls_certificates):
    from aiosmtpd.controller import Controller

    from tests.support.mail_sink import ScriptedHandler

    server_context, ca_file = tls_certificates
    handler = ScriptedHandler(tmp_path / "outbox")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_context)
    controller.start()
    try:
        smtp_at(port, security="tls", tls_ca_file=ca_file).send(message("implicit@example.com"))
    finally:
        controller.stop()
    assert [str(m["To"]) for m in handler.received] == ["implicit@example.com"]


def test_an_smtp_server_that_keeps_failing_opens_the_breaker_for_every_worker(
    redis_resource, tmp_path
):
    """Two workers' senders share one breaker through Redis: after 3 transient failures (a
    server refusing connections), both refuse to send, without a connection, until it
    resets; then a send goes through and closes it. A 5xx refusal does not count."""
    port = free_port()  # nothing listens there yet
    limits = {"redis": redis_resource, "breaker_fail_max": 3, "breaker_reset_seconds": 1}
    first, second = (smtp_at(port, **limits) for _ in "12")
    for sender in (first, second, first):
        with pytest.raises(TransientError) as failed:
            sender.send(message("down@example.com"))
        assert not isinstance(failed.value, CircuitOpen)
    with pytest.raises(CircuitOpen):
        second.send(message("down@example.com"))

    up = MailSink(tmp_path / "outbox", port=port).start()  # the server comes up
    try:
        time.sleep(1.1)  # the breaker's reset
        second.send(message("back@example.com"))  # the probe, which closes it
        assert first.guard.breaker_state() == {}
        assert [m["To"] for m in up.to("back@example.com")] == ["back@example.com"]
        # A permanent refusal says the server is up: it never opens the breaker.
        up.handler.refuse_next_rcpt("550 no such user", times=5)
        for _ in range(5):
            with pytest.raises(PermanentError):
                first.send(message("nobody@example.com"))
        first.send(message("still@example.com"))
    finally:
        up.stop()


def test_a_worker_thread_sends_its_messages_over_one_connection_and_replaces_a_dropped_one(
    own_sink,
):
    with TcpCut("127.0.0.1", own_sink.port) as relay:
        sender = smtp_at(relay.port)
        for n in range(3):
            sender.send(message(f"reuse-{n}@example.com"))
        assert relay.connections == 1

        relay.cut()  # the server hangs up on the idle connection (as servers do after a while)
        relay.restore()
        sender.send(message("after-drop@example.com"))  # found dead, replaced

        assert relay.connections == 2
    assert [len(own_sink.to(f"reuse-{n}@example.com")) for n in range(3)] == [1, 1, 1]
    assert len(own_sink.to("after-drop@example.com")) == 1
