"""SmtpResource against a real SMTP server (aiosmtpd), WebhookResource against a real HTTP
receiver on loopback: what is retried, what is not, and what the receiver sees."""

from __future__ import annotations

import logging
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
    settings = {"security": "none", "timeout_seconds": 5, "backoff_seconds": 0.05}
    return SmtpResource(host="127.0.0.1", port=port, **{**settings, **overrides}).sender()


@pytest.fixture
def own_sink(tmp_path):
    sink = MailSink(tmp_path / "outbox").start()
    yield sink
    sink.stop()


class StartServerOnFirstFailure(logging.Handler):
    """Brings the SMTP server up when the resource reports its first failed attempt, so the
    retry, and only the retry, finds it listening."""

    def __init__(self, sink: MailSink):
        super().__init__()
        self.sink = sink
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.failures.append(record.getMessage())
        if self.sink.controller is None:
            self.sink.start()


def test_smtp_down_is_retried_and_succeeds_once_the_server_is_back(tmp_path):
    sink = MailSink(tmp_path / "outbox", port=free_port())
    watcher = StartServerOnFirstFailure(sink)
    logger = logging.getLogger("queue_pipelines.smtp")
    logger.addHandler(watcher)
    try:
        attempts = smtp_at(sink.port, max_attempts=3).send(message("back@example.com"))
    finally:
        logger.removeHandler(watcher)
        sink.stop()
    assert attempts == 2
    assert len(watcher.failures) == 1
    assert "could not reach the SMTP server" in watcher.failures[0]
    assert [m["Subject"] for m in sink.to("back@example.com")] == ["hello"]


def test_smtp_down_for_good_is_a_transient_failure_for_the_step_to_retry():
    with pytest.raises(TransientError, match="could not reach the SMTP server"):
        smtp_at(free_port(), max_attempts=2).send(message("nobody@example.com"))


def test_550_fails_at_once_with_the_servers_reply(own_sink):
    own_sink.handler.refuse_next_rcpt("550 5.1.1 <gone@example.com>: Recipient address rejected")
    with pytest.raises(PermanentError) as caught:
        smtp_at(own_sink.port, max_attempts=3).send(message("gone@example.com"))
    assert "550 5.1.1 <gone@example.com>: Recipient address rejected" in caught.value.reason
    assert own_sink.handler.rcpt_replies == []  # asked once: no retry
    assert own_sink.to("gone@example.com") == []


def test_4xx_is_retried(own_sink):
    own_sink.handler.refuse_next_rcpt("451 4.3.0 try again later", times=2)
    attempts = smtp_at(own_sink.port, max_attempts=3).send(message("later@example.com"))
    assert attempts == 3
    assert len(own_sink.to("later@example.com")) == 1


def test_4xx_until_attempts_run_out_is_transient(own_sink):
    own_sink.handler.refuse_next_rcpt("451 4.3.0 try again later", times=2)
    with pytest.raises(TransientError, match="451 4.3.0 try again later"):
        smtp_at(own_sink.port, max_attempts=2).send(message("later@example.com"))


@pytest.fixture
def receiver():
    with WebhookReceiver(new_secret()) as server:
        yield server


def webhooks_for(receiver: WebhookReceiver, **overrides) -> WebhookResource:
    settings = {"secret": receiver.secret, "backoff_seconds": 0.01, "timeout_seconds": 5}
    return WebhookResource(**{**settings, **overrides})


def test_webhook_500_500_200_is_delivered_once(receiver):
    receiver.answer(500, 500, 200)
    delivery = (
        webhooks_for(receiver, max_attempts=4)
        .sender()
        .deliver(receiver.url, "msg_abc", b'{"type":"payment.succeeded"}')
    )
    assert (delivery.status, delivery.attempts) == (200, 3)
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert all(r.signature_valid for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {"msg_abc"}
    assert list(receiver.processed) == ["msg_abc"]


def test_webhook_400_is_not_retried(receiver):
    receiver.answer(400)
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        webhooks_for(receiver, max_attempts=4).sender().deliver(receiver.url, "msg_bad", b"{}")
    assert len(receiver.received) == 1
    assert "not retried" in caught.value.reason


@pytest.mark.parametrize("status", [408, 429, 503])
def test_webhook_retryable_statuses_are_retried(receiver, status):
    receiver.answer(status)
    delivery = webhooks_for(receiver).sender().deliver(receiver.url, "msg_retry", b"{}")
    assert delivery.attempts == 2
    assert [r.status for r in receiver.received] == [status, 200]


def test_webhook_network_error_is_retried_then_transient():
    url = f"http://127.0.0.1:{free_port()}/hooks"
    with pytest.raises(TransientError, match="failed 2 times"):
        WebhookResource(secret=new_secret(), backoff_seconds=0.01, max_attempts=2).sender().deliver(
            url, "msg_down", b"{}"
        )


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
    first, second = (smtp_at(port, max_attempts=1, **limits) for _ in "12")
    for sender in (first, second, first):
        with pytest.raises(TransientError) as failed:
            sender.send(message("down@example.com"))
        assert not isinstance(failed.value, CircuitOpen)
    with pytest.raises(CircuitOpen):
        second.send(message("down@example.com"))

    up = MailSink(tmp_path / "outbox", port=port).start()  # the server comes up
    try:
        time.sleep(1.1)  # the breaker's reset
        assert second.send(message("back@example.com")) == 1  # the probe, which closes it
        assert first.guard.breaker_state() == {}
        assert [m["To"] for m in up.to("back@example.com")] == ["back@example.com"]
        # A permanent refusal says the server is up: it never opens the breaker.
        up.handler.refuse_next_rcpt("550 no such user", times=5)
        for _ in range(5):
            with pytest.raises(PermanentError):
                first.send(message("nobody@example.com"))
        assert first.send(message("still@example.com")) == 1
    finally:
        up.stop()


def test_a_worker_thread_sends_its_messages_over_one_connection_and_replaces_a_dropped_one(
    own_sink,
):
    with TcpCut("127.0.0.1", own_sink.port) as relay:
        sender = smtp_at(relay.port)
        for n in range(3):
            assert sender.send(message(f"reuse-{n}@example.com")) == 1
        assert relay.connections == 1

        relay.cut()  # the server hangs up on the idle connection (as servers do after a while)
        relay.restore()
        assert sender.send(message("after-drop@example.com")) == 1  # found dead, replaced

        assert relay.connections == 2
    assert [len(own_sink.to(f"reuse-{n}@example.com")) for n in range(3)] == [1, 1, 1]
    assert len(own_sink.to("after-drop@example.com")) == 1
