"""Sending e-mail over SMTP: a real server (SMTP_HOST) or the local outbox sink of `make run`."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

from queue_pipelines.failures import PermanentError, ProviderError, TransientError
from queue_pipelines.providers.guard import ProviderGuard
from queue_pipelines.telemetry.provider_calls import observe_provider_call


def _reply_text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _by_code(code: int, reason: str, error_code: str) -> ProviderError:
    # RFC 5321: 4yz is a transient negative completion, 5yz a permanent one.
    if 400 <= code < 500:
        return TransientError(reason, code=error_code)
    return PermanentError(reason, code=error_code)


def classify_smtp_error(exc: BaseException) -> ProviderError:
    """Transient: connection refused or dropped, timeouts, 4xx replies. Permanent: 5xx."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        address, (code, reply) = next(iter(exc.recipients.items()))
        return _by_code(
            code, f"SMTP server refused recipient {address}: {code} {_reply_text(reply)}", "rcpt"
        )
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _by_code(
            exc.smtp_code,
            f"SMTP server refused sender {exc.sender}: {exc.smtp_code} {_reply_text(exc.smtp_error)}",
            "sender",
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentError(
            f"SMTP login refused ({exc.smtp_code}): check SMTP_USERNAME and SMTP_PASSWORD",
            code="auth",
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(
            exc.smtp_code,
            f"SMTP server replied {exc.smtp_code} {_reply_text(exc.smtp_error)}",
            "reply",
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"SMTP server does not support it: {exc}", code="not_supported")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"SMTP server certificate not trusted: {exc}", code="tls")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(f"SMTP server closed the connection: {exc}", code="disconnected")
    if isinstance(exc, TimeoutError):
        return TransientError(f"SMTP server timed out: {exc}", code="timeout")
    if isinstance(exc, OSError):
        return TransientError(f"could not reach the SMTP server: {exc}", code="connection")
    return PermanentError(f"SMTP failure: {type(exc).__name__}: {exc}", code="unexpected")


@dataclass(frozen=True)
class SmtpSender:
    """An SMTP server to send through; `send` makes one try. With a `guard`, it takes a slot
    of its rate limit and passes its circuit breaker."""

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    tls_ca_file: str | None = None
    from_address: str = "Tickets <tickets@example.com>"
    timeout_seconds: float = 30.0
    sandbox: bool = False
    guard: ProviderGuard | None = field(default=None, compare=False)
    # Each thread's open connection, reused for its next message (`_client`).
    _connections: threading.local = field(
        default_factory=threading.local, compare=False, repr=False
    )

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.tls_ca_file)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_seconds, context=self._tls_context()
            )
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        try:
            if self.security == "starttls":
                client.starttls(context=self._tls_context())
        except BaseException:
            client.close()
            raise
        return client

    def _client(self) -> smtplib.SMTP:
        """This thread's connection, logged in: the one it sent its last message on while
        the server still answers NOOP, else a new one. A connection, TLS and login cost
        several round trips, each message of a batch's worker thread saves them."""
        client = getattr(self._connections, "client", None)
        if client is not None:
            try:
                if client.noop()[0] == 250:
                    return client
            except (smtplib.SMTPException, OSError):
                pass
            self._drop_connection()
        client = self._connect()
        try:
            if self.username:
                client.login(self.username, self.password or "")
        except BaseException:
            client.close()
            raise
        self._connections.client = client
        return client

    def _drop_connection(self) -> None:
        client = getattr(self._connections, "client", None)
        self._connections.client = None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
            client.close()

    def _send_once(self, message: EmailMessage) -> None:
        client = self._client()
        try:
            refused = client.send_message(message)
        except BaseException:
            self._drop_connection()  # in whatever state the failure left it: not reused
            raise
        if refused:  # some of several recipients refused: say so rather than pass silently
            raise classify_smtp_error(smtplib.SMTPRecipientsRefused(refused))

    def send(self, message: EmailMessage) -> None:
        """Send `message` (From is filled in when missing): one try, its failure classified
        (the guard counts only the transient ones). Retrying a transient failure is the
        request's backoff's to do (queue_pipelines/request_runner.py)."""
        if "From" not in message:
            message["From"] = self.from_address
        with self.guard.guarded() if self.guard else contextlib.nullcontext():
            try:
                with observe_provider_call("smtp", "send", classify_smtp_error):
                    self._send_once(message)
            except ProviderError:
                raise
            except Exception as exc:
                raise classify_smtp_error(exc) from exc
