"""Listing PaymentIntents by customer and creation time, as Stripe does, in localstripe.

localstripe 1.15 lists every PaymentIntent and refuses any filter. Stripe's
`GET /v1/payment_intents` takes `customer` and `created` (`gt`, `gte`, `lt`, `lte`), and the
effect protocol relies on them: a charge in doubt is looked for among its customer's recent
PaymentIntents (queue_pipelines/payments.py).
"""

from __future__ import annotations

import operator
from typing import Any

import localstripe.resources as ls

_COMPARISONS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _created_filter(created: Any):
    """A predicate on `created` from Stripe's `created` parameter: a timestamp or a dict of
    comparisons."""
    if created is None:
        return lambda _value: True
    bounds = created if isinstance(created, dict) else {"eq": created}
    tests = []
    for name, value in bounds.items():
        number = ls.try_convert_to_int(value)
        compare = operator.eq if name == "eq" else _COMPARISONS.get(name)
        if compare is None or not isinstance(number, int):
            raise ls.UserError(400, f"Invalid created filter: {name}")
        tests.append((compare, number))
    return lambda value: all(compare(value, number) for compare, number in tests)


def _list_payment_intents(
    cls, url, customer=None, created=None, limit=None, starting_after=None, **kwargs
):
    if kwargs:
        raise ls.UserError(400, "Unexpected " + ", ".join(kwargs))
    if customer is not None and not (isinstance(customer, str) and customer.startswith("cus_")):
        raise ls.UserError(400, "Invalid customer")
    keep = _created_filter(created)
    listing = super(ls.PaymentIntent, cls)._api_list_all(
        url, limit=limit, starting_after=starting_after
    )
    listing._list = [
        intent
        for intent in listing._list
        if (customer is None or intent.customer == customer) and keep(intent.created)
    ]
    return listing


def install() -> None:
    ls.PaymentIntent._api_list_all = classmethod(_list_payment_intents)
