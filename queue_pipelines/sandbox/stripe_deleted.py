"""Deleted customers answered as Stripe answers them, in localstripe.

Stripe keeps a deleted customer's id: `GET /v1/customers/cus_...` answers 200 with
`{"id": ..., "object": "customer", "deleted": true}`, and only an id it never had is a 404.
localstripe forgets a deleted customer and answers 404 for both, which would leave the
project's reading of Stripe's answer (StripeApi.retrieve_customer, the customer job's check of
a delete in doubt) untried in the sandbox. Here the ids deleted are kept, in localstripe's own
store under a name no localstripe object has (so they go to the state file with the objects
and are flushed with them), and a GET of one is answered as Stripe does.

Install before the state file is loaded.
"""

from __future__ import annotations

import re

import localstripe.resources as ls
from aiohttp import web

DELETED_CUSTOMERS = "queue_pipelines.deleted_customers"
_CUSTOMER_PATH = re.compile(r"/v1/customers/(cus_[A-Za-z0-9_]+)")


def install(app: web.Application) -> None:
    store = ls.store
    delete = ls.Customer._api_delete.__func__

    def _api_delete(cls, id):  # noqa: A002 - localstripe's parameter name
        answer = delete(cls, id)
        # A new value, not a change inside the old one: a store write is what the state
        # file follows.
        store[DELETED_CUSTOMERS] = frozenset({*store.get(DELETED_CUSTOMERS, ()), id})
        return answer

    ls.Customer._api_delete = classmethod(_api_delete)

    @web.middleware
    async def answer_deleted(request: web.Request, handler) -> web.StreamResponse:
        found = _CUSTOMER_PATH.fullmatch(request.path) if request.method == "GET" else None
        if found and found.group(1) in store.get(DELETED_CUSTOMERS, ()):
            return web.json_response({"id": found.group(1), "object": "customer", "deleted": True})
        return await handler(request)

    # Innermost: behind localstripe's auth check, as its own answers are.
    app.middlewares.append(answer_deleted)
