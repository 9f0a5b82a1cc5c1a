"""Failure classes shared by every provider: what is worth retrying and what is not."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider (Stripe, Solana, SMTP, a webhook receiver) refused or failed a request.

    `permanent` errors (a declined card, an invalid request) fail at once: retrying cannot
    help. The rest (network, timeouts, 429, 5xx) are transient and retried with backoff.
    `reason` is written for an operator; it never holds a secret.
    """

    def __init__(self, reason: str, *, permanent: bool, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code


class PermanentError(ProviderError):
    def __init__(self, reason: str, code: str | None = None):
        super().__init__(reason, permanent=True, code=code)


class TransientError(ProviderError):
    """`retry_after`: the provider as a whole said when to come back (a circuit breaker that
    is open): waiting that long is not a failed attempt of the request."""

    def __init__(self, reason: str, code: str | None = None, retry_after: float | None = None):
        super().__init__(reason, permanent=False, code=code)
        self.retry_after = retry_after


class SentBefore(ProviderError):
    """The provider says an earlier call with this request's key reached it (Stripe's
    IdempotencyError: the key came back with other parameters): this call did nothing, and
    the earlier one may have acted. Never a refusal: the effect protocol looks for the earlier
    effect (queue_pipelines/effects.py) and, not finding it, leaves the claim in doubt."""

    def __init__(self, reason: str, code: str | None = None):
        super().__init__(reason, permanent=False, code=code)
