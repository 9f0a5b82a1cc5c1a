"""Managing a tenant's Stripe customers at most once per request: create, update, delete.

A tenant acts only on its own customers. The service writes `tenant_id` into the metadata of
every customer it creates (here and when a payment creates its buyer), and a request naming a
customer id is checked against it before anything is changed: ids are not secrets (they are
in receipts, webhooks, support mails), so another tenant's id is refused as a permanent
failure, with only a read of the customer at Stripe.

The effect ledger remembers, per tenant and e-mail, the customer a payment used (payments.py,
`customer_key`). Deleting a customer, or moving it to another e-mail, forgets those rows, so
the next payment looks the buyer up at Stripe again and creates a new customer if none is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from queue_pipelines.effects import act_once
from queue_pipelines.failures import PermanentError
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.ledger import Claim, EffectLedger, effect_key
from queue_pipelines.payments import (
    CUSTOMER_KIND,
    customer_key,
    stripe_idempotency_key,
    stripe_metadata,
)
from queue_pipelines.providers.stripe import CustomerSummary, StripeApi

# Not "customer": that kind holds the rows noting a buyer's customer by e-mail, which a
# delete forgets; a request's own effect is never forgotten.
CHANGE_KIND = "customer-change"
# The claim's note that a delete checked the owner before sending it: only then is a customer
# Stripe no longer has this request's doing.
OWNER_CHECKED = "owner_checked"


@dataclass(frozen=True)
class CustomerOutcome:
    action: str  # create, update, delete
    customer_id: str
    email: str | None
    name: str | None
    replayed: bool = False  # True: an earlier attempt made the change; nothing done now


def change_key(tenant_id: str, idempotency_key: str) -> str:
    return effect_key(CHANGE_KIND, tenant_id, idempotency_key)


def check_owner(
    customer: CustomerSummary | None, customer_id: str, tenant_id: str
) -> CustomerSummary:
    """The customer, if `tenant_id` owns it; refused, permanently, if Stripe does not have it
    or another tenant owns it. Whose it is, if anyone's, stays unsaid: another tenant's
    business."""
    if customer is None:
        raise PermanentError(
            f"Stripe has no customer {customer_id} (never made, or deleted)",
            code="no_such_customer",
        )
    if customer.tenant_id != tenant_id:
        raise PermanentError(
            f"{customer_id} is not a customer of tenant {tenant_id}: a tenant can change only "
            "its own customers",
            code="not_tenant_customer",
        )
    return customer


def forget_customer(ledger: EffectLedger, tenant_id: str, customer_id: str) -> int:
    """Drop the rows noting `customer_id` as the tenant's customer for some e-mail (a payment
    wrote them), so the next payment looks the buyer up at Stripe; returns how many."""
    noted = ledger.find_done(
        CUSTOMER_KIND, f"{CUSTOMER_KIND}:{tenant_id}:", "customer_id", customer_id
    )
    for row in noted:
        ledger.forget_index(row["effect_key"], CUSTOMER_KIND)
    return len(noted)


def turns_of(request: CustomerPayload) -> list[str]:
    """What a request takes its turn by in a batch: the customer it changes, and the e-mail
    it gives one, so that a create for an e-mail and an update moving another customer onto
    it are checked for one customer per e-mail one after the other."""
    keys = [request.customer_id] if request.customer_id else []
    if request.email is not None:
        keys.append(str(request.email).lower())
    return keys


def _applied(customer: CustomerSummary, request: CustomerPayload) -> bool:
    """Whether the customer already holds every value the update sets."""
    metadata_set = all(customer.metadata.get(k, "") == v for k, v in request.metadata.items())
    return (
        (request.email is None or (customer.email or "").lower() == request.email.lower())
        and (request.name is None or customer.name == request.name)
        and metadata_set
    )


def manage_customer_once(
    stripe: StripeApi,
    ledger: EffectLedger,
    *,
    tenant_id: str,
    idempotency_key: str,
    request: CustomerPayload,
    run_id: str,
    run_is_live: Callable[[str], bool],
) -> CustomerOutcome:
    """Create, update or delete the customer unless this request already did."""
    key = change_key(tenant_id, idempotency_key)
    action = request.action

    def outcome_of(customer_id: str, email: str | None, name: str | None) -> dict:
        recorded = CustomerOutcome(action=action, customer_id=customer_id, email=email, name=name)
        return {k: v for k, v in asdict(recorded).items() if k != "replayed"}

    def owned(customer_id: str) -> CustomerSummary:
        return check_owner(stripe.retrieve_customer(customer_id), customer_id, tenant_id)

    def refuse_a_second_for(email: str, customer_id: str | None = None) -> None:
        # Payments find a buyer's customer by e-mail: a second one would split them.
        existing = stripe.find_customer(tenant_id, email)
        if existing is not None and existing != customer_id:
            raise PermanentError(
                f"tenant {tenant_id} has a customer for {email} already ({existing}): one "
                "customer per e-mail",
                code="customer_exists",
            )

    def create() -> dict:
        email = str(request.email).lower()
        refuse_a_second_for(email)
        created = stripe.create_customer(
            email=email,
            name=request.name,
            metadata=stripe_metadata(tenant_id, idempotency_key, None, request.metadata),
            idempotency_key=stripe_idempotency_key(key),
        )
        return outcome_of(created.id, created.email, created.name)

    def created_earlier(_claim: Claim) -> dict | None:
        found = stripe.find_customer_made_for(
            tenant_id, str(request.email).lower(), idempotency_key
        )
        return None if found is None else outcome_of(found.id, found.email, found.name)

    def update() -> dict:
        customer_id = str(request.customer_id)
        owned(customer_id)
        email = None if request.email is None else str(request.email).lower()
        if email is not None:
            refuse_a_second_for(email, customer_id)
        updated = stripe.update_customer(
            customer_id,
            email=email,
            name=request.name,
            metadata=request.metadata,
            idempotency_key=stripe_idempotency_key(key),
        )
        return outcome_of(updated.id, updated.email, updated.name)

    def updated_earlier(_claim: Claim) -> dict | None:
        customer = owned(str(request.customer_id))
        if not _applied(customer, request):
            return None  # setting the same values again is harmless
        return outcome_of(customer.id, customer.email, customer.name)

    def delete() -> dict:
        customer = owned(str(request.customer_id))
        ledger.note(key, OWNER_CHECKED, customer.id)
        stripe.delete_customer(customer.id)  # gone either way once it answers
        return outcome_of(customer.id, customer.email, customer.name)

    def deleted_earlier(claim: Claim) -> dict | None:
        customer_id = str(request.customer_id)
        customer = stripe.retrieve_customer(customer_id)
        if customer is None:
            # Gone by this request only if an attempt found it the tenant's and sent the
            # delete; else `delete` answers that Stripe has no such customer.
            checked = customer_id in claim.notes.get(OWNER_CHECKED, [])
            return outcome_of(customer_id, None, None) if checked else None
        check_owner(customer, customer_id, tenant_id)
        return None

    def noted_by_email(result: dict) -> tuple[str, str, dict] | None:
        # The next payment of this buyer uses the new customer without looking it up.
        return (
            customer_key(tenant_id, result["email"]),
            CUSTOMER_KIND,
            {"customer_id": result["customer_id"]},
        )

    act, in_doubt = {
        "create": (create, created_earlier),
        "update": (update, updated_earlier),
        "delete": (delete, deleted_earlier),
    }[action]
    effect = act_once(
        ledger,
        key,
        CHANGE_KIND,
        run_id,
        act,
        in_doubt=in_doubt,
        run_is_live=run_is_live,
        index_of=noted_by_email if action == "create" else None,
    )
    outcome = CustomerOutcome(**effect.result, replayed=effect.replayed)
    # After every attempt, replays too: an attempt that died between Stripe's answer and here
    # left the rows, and forgetting twice is harmless.
    if action == "delete" or (action == "update" and request.email is not None):
        forget_customer(ledger, tenant_id, outcome.customer_id)
    return outcome
