"""Stripe, through the official SDK: the calls this project makes, with errors classified.

The sandbox is the same SDK pointed at localstripe (`api_base`). Every call is one try: the
SDK sends nothing again on its own (`max_network_retries` 0), so the request's backoff
(queue_pipelines/request_runner.py) is the one retry loop, and a call that created something
whose answer was lost is settled by asking Stripe (queue_pipelines/effects.py) instead of
being re-sent. Given a ProviderGuard, every call goes through its circuit breaker and takes a
rate slot shared by every worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe

from queue_pipelines.failures import (
    PermanentError,
    ProviderError,
    SentBefore,
    TransientError,
)
from queue_pipelines.providers.guard import DEFAULT_RATES, ProviderGuard
from queue_pipelines.telemetry.provider_calls import observe_provider_call


def documented_rate(secret_key: str) -> str:
    """Stripe's documented request limit for the key's mode: 100/s live, 25/s in test mode."""
    live = secret_key.startswith(("sk_live_", "rk_live_"))
    return DEFAULT_RATES["stripe_live" if live else "stripe"]


class CardDeclined(PermanentError):
    """The card was declined: the one failure the buyer is told about (payment_failed)."""


class UnknownCustomer(PermanentError):
    """The request named a customer that Stripe does not have (deleted since)."""


def classify_stripe_error(exc: stripe.StripeError) -> ProviderError:
    """Map an SDK error to a transient or permanent ProviderError with a readable reason."""
    status = exc.http_status
    code = getattr(exc, "code", None)
    message = exc.user_message or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.CardError):
        decline = (exc.json_body or {}).get("error", {}).get("decline_code") or code
        return CardDeclined(f"card declined: {message} ({decline})", code=decline)
    if code == "resource_missing" and getattr(exc, "param", None) == "customer":
        return UnknownCustomer(f"Stripe has no such customer: {message}", code=code)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        # Stripe's message can quote part of the key; say only where to look.
        return PermanentError(
            f"Stripe refused the API key (HTTP {status}): check STRIPE_SECRET_KEY", code=code
        )
    if isinstance(exc, stripe.IdempotencyError):
        # Stripe kept an earlier call with this key (24 h), which may have moved money: the
        # opposite of a refusal, whatever the parameters that differ now.
        return SentBefore(
            f"Stripe has this idempotency key from an earlier call with other parameters: "
            f"{message}",
            code=code or "idempotency_error",
        )
    if isinstance(exc, stripe.APIConnectionError):
        return TransientError(f"could not reach Stripe: {message}", code="connection")
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return TransientError(f"Stripe rate limit (HTTP 429): {message}", code=code or "rate_limit")
    if status is None or status >= 500:
        return TransientError(f"Stripe server error (HTTP {status}): {message}", code=code)
    if status == 409:  # another request with the same idempotency key is still in flight
        return TransientError(f"Stripe request conflict (HTTP 409): {message}", code=code)
    return PermanentError(f"Stripe rejected the request (HTTP {status}): {message}", code=code)


@dataclass(frozen=True)
class PaymentIntentSummary:
    id: str
    status: str
    amount: int
    currency: str
    customer_id: str | None

    @classmethod
    def of(cls, intent: Any) -> PaymentIntentSummary:
        return cls(
            id=intent.id,
            status=intent.status,
            amount=intent.amount,
            currency=intent.currency,
            customer_id=_id_of(intent.customer),
        )


@dataclass(frozen=True)
class RefundableBalance:
    payment_intent_id: str
    currency: str
    captured: int
    refunded: int

    @property
    def remaining(self) -> int:
        return max(self.captured - self.refunded, 0)


@dataclass(frozen=True)
class RefundSummary:
    id: str
    status: str
    amount: int
    currency: str
    payment_intent_id: str

    @classmethod
    def of(cls, refund: Any, payment_intent_id: str) -> RefundSummary:
        return cls(
            id=refund.id,
            status=refund.status,
            amount=refund.amount,
            currency=refund.currency,
            payment_intent_id=payment_intent_id,
        )


@dataclass(frozen=True)
class CustomerSummary:
    id: str
    email: str | None
    name: str | None
    metadata: dict[str, str]

    @property
    def tenant_id(self) -> str | None:
        """The tenant that owns it: the service writes `tenant_id` when it creates one."""
        return self.metadata.get("tenant_id")

    @classmethod
    def of(cls, customer: Any) -> CustomerSummary:
        return cls(
            id=customer.id,
            email=getattr(customer, "email", None),
            name=getattr(customer, "name", None),
            metadata=_metadata_of(customer),
        )


def _not_found(exc: PermanentError) -> bool:
    """Stripe answered 404: the object named in the path does not exist (or no longer)."""
    cause = exc.__cause__
    return isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404


def _id_of(value: Any) -> str | None:
    # Expanded fields arrive as objects, unexpanded ones as ids.
    if value is None or isinstance(value, str):
        return value
    return value.id


def _creating(idempotency_key: str) -> dict[str, Any]:
    """Request options of a call that creates something (money may move). The effect ledger
    is the first line against doing it twice; Stripe's idempotency key (24 h) the second."""
    return {"idempotency_key": idempotency_key}


def _metadata_of(obj: Any) -> dict[str, str]:
    metadata = getattr(obj, "metadata", None)
    return metadata.to_dict() if metadata is not None else {}


class StripeApi:
    """Card payments and refunds on Stripe, one SDK client per instance."""

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 30.0,
        guard: ProviderGuard | None = None,
    ):
        self.api_base = api_base
        self.guard = guard
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,  # one try per call (the module's docstring says why)
            http_client=stripe.HTTPXClient(timeout=timeout_seconds, allow_sync_methods=True),
        )

    @property
    def sandbox(self) -> bool:
        return self.api_base is not None

    def client(self) -> stripe.StripeClient:
        return self._client

    def _call(self, fn, *args, **kwargs):
        """The one way a call leaves: through the guard's breaker and a rate slot (when there is
        a guard); the breaker sees the classified error, so a declined card does not count
        against Stripe's health."""
        operation = f"{type(getattr(fn, '__self__', None)).__name__}.{fn.__name__}"
        with self.guard.guarded() if self.guard else contextlib.nullcontext():
            try:
                with observe_provider_call("stripe", operation, classify_stripe_error):
                    return fn(*args, **kwargs)
            except stripe.StripeError as exc:
                raise classify_stripe_error(exc) from exc

    def _each(self, list_fn, params: dict[str, Any]) -> Iterator[Any]:
        """Every object of a listing, a page per call (the SDK's auto_paging_iter would fetch
        the next pages around the guard)."""
        page = self._call(list_fn, params=params)
        while True:
            yield from page.data
            if not page.has_more or not page.data:
                return
            page = self._call(list_fn, params={**params, "starting_after": page.data[-1].id})

    def find_customer(self, tenant_id: str, email: str) -> str | None:
        """The tenant's customer with this e-mail, if Stripe has one."""
        customers = self.client().v1.customers
        for customer in self._each(customers.list, {"email": email, "limit": 100}):
            if _metadata_of(customer).get("tenant_id") == tenant_id:
                return customer.id
        return None

    def find_or_create_customer(
        self, *, tenant_id: str, email: str, name: str | None, idempotency_key: str
    ) -> str:
        """The tenant's customer with this e-mail, created on first use."""
        found = self.find_customer(tenant_id, email)
        if found is not None:
            return found
        params: dict[str, Any] = {"email": email, "metadata": {"tenant_id": tenant_id}}
        if name:
            params["name"] = name
        created = self._call(
            self.client().v1.customers.create, params=params, options=_creating(idempotency_key)
        )
        return created.id

    def retrieve_customer(self, customer_id: str) -> CustomerSummary | None:
        """The customer, or None when Stripe has none by that id (never made, or deleted:
        Stripe answers a deleted one as `deleted: true`, localstripe with a 404)."""
        try:
            customer = self._call(self.client().v1.customers.retrieve, customer_id)
        except PermanentError as exc:
            if _not_found(exc):
                return None
            raise
        if getattr(customer, "deleted", False):
            return None
        return CustomerSummary.of(customer)

    def find_customer_made_for(
        self, tenant_id: str, email: str, idempotency_key: str
    ) -> CustomerSummary | None:
        """The tenant's customer with this e-mail created for `idempotency_key` (its metadata
        says so), if Stripe has one: how a create in doubt is settled."""
        customers = self.client().v1.customers
        for customer in self._each(customers.list, {"email": email, "limit": 100}):
            metadata = _metadata_of(customer)
            if (
                metadata.get("tenant_id") == tenant_id
                and metadata.get("idempotency_key") == idempotency_key[:500]
            ):
                return CustomerSummary.of(customer)
        return None

    def create_customer(
        self, *, email: str, name: str | None, metadata: dict[str, str], idempotency_key: str
    ) -> CustomerSummary:
        params: dict[str, Any] = {"email": email, "metadata": metadata}
        if name:
            params["name"] = name
        created = self._call(
            self.client().v1.customers.create, params=params, options=_creating(idempotency_key)
        )
        return CustomerSummary.of(created)

    def update_customer(
        self,
        customer_id: str,
        *,
        email: str | None,
        name: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> CustomerSummary:
        """Set the given fields (None: left as they are); metadata is merged, and an empty
        value removes its key. Sending it twice sets the same values: safe to resend."""
        params: dict[str, Any] = {}
        if email is not None:
            params["email"] = email
        if name is not None:
            params["name"] = name
        if metadata:
            params["metadata"] = metadata
        updated = self._call(
            self.client().v1.customers.update,
            customer_id,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return CustomerSummary.of(updated)

    def delete_customer(self, customer_id: str) -> bool:
        """Delete the customer; False when Stripe had none by that id any more (a resent
        DELETE whose first answer was lost, or a delete made meanwhile)."""
        try:
            self._call(self.client().v1.customers.delete, customer_id)
        except PermanentError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer_id: str,
        payment_method: str,
        description: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> PaymentIntentSummary:
        """Create and confirm a PaymentIntent in one call."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "customer": customer_id,
            "payment_method": payment_method,
            "confirm": True,
            "metadata": metadata,
        }
        if description:
            params["description"] = description
        intent = self._call(
            self.client().v1.payment_intents.create,
            params=params,
            options=_creating(idempotency_key),
        )
        return PaymentIntentSummary.of(intent)

    def find_payment_intent(
        self, customer_id: str, *, tenant_id: str, idempotency_key: str, created_after: datetime
    ) -> PaymentIntentSummary | None:
        """The customer's PaymentIntent made for this request (its metadata names the tenant
        and the idempotency key), created after `created_after`; the one that moved money
        when there are several."""
        listing = self._each(
            self.client().v1.payment_intents.list,
            {
                "customer": customer_id,
                "created": {"gte": int(created_after.timestamp())},
                "limit": 100,
            },
        )
        found = [
            PaymentIntentSummary.of(intent)
            for intent in listing
            if _metadata_of(intent).get("tenant_id") == tenant_id
            and _metadata_of(intent).get("idempotency_key") == idempotency_key[:500]
        ]
        found.sort(key=lambda intent: intent.status not in {"succeeded", "processing"})
        return found[0] if found else None

    def refundable_balance(self, payment_intent_id: str, tenant_id: str) -> RefundableBalance:
        """What a payment of `tenant_id`'s can still refund. Another tenant's payment is
        refused as such (ids are not secrets: they are in buyers' mails and webhooks)."""
        intent = self._call(
            self.client().v1.payment_intents.retrieve,
            payment_intent_id,
            params={"expand": ["latest_charge"]},
        )
        if _metadata_of(intent).get("tenant_id") != tenant_id:
            # Whose payment it is, if anyone's, stays unsaid: another tenant's business.
            raise PermanentError(
                f"{payment_intent_id} is not a payment of tenant {tenant_id}: a tenant can "
                "refund only its own payments",
                code="not_tenant_payment",
            )
        charge = intent.latest_charge
        if intent.status != "succeeded" or charge is None:
            raise PermanentError(
                f"{payment_intent_id} has status {intent.status!r}: only a succeeded payment "
                "can be refunded",
                code="not_refundable",
            )
        # localstripe omits amount_captured; a captured charge's amount is the same figure.
        captured = getattr(charge, "amount_captured", None) or charge.amount
        return RefundableBalance(
            payment_intent_id=payment_intent_id,
            currency=intent.currency,
            captured=captured,
            refunded=getattr(charge, "amount_refunded", None) or 0,
        )

    def find_refund(self, payment_intent_id: str, idempotency_key: str) -> RefundSummary | None:
        """The refund of this PaymentIntent made for `idempotency_key`, if one exists."""
        listing = self._each(
            self.client().v1.refunds.list, {"payment_intent": payment_intent_id, "limit": 100}
        )
        for refund in listing:
            if _metadata_of(refund).get("idempotency_key") == idempotency_key:
                return RefundSummary.of(refund, payment_intent_id)
        return None

    def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundSummary:
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": metadata,
        }
        if reason:
            params["reason"] = reason
        refund = self._call(
            self.client().v1.refunds.create, params=params, options=_creating(idempotency_key)
        )
        return RefundSummary.of(refund, payment_intent_id)

    def customer_contact(self, payment_intent_id: str) -> tuple[str | None, str | None]:
        """The e-mail and name of the customer a PaymentIntent belongs to (for notices)."""
        intent = self._call(self.client().v1.payment_intents.retrieve, payment_intent_id)
        customer_id = _id_of(intent.customer)
        if customer_id is None:
            return None, None
        customer = self._call(self.client().v1.customers.retrieve, customer_id)
        return getattr(customer, "email", None), getattr(customer, "name", None)
