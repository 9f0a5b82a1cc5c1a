"""The Stripe sandbox answers in constant time as its store grows (sandbox/stripe_index.py):
each request the project makes visits as many store entries on a large store as on a small
one, and every answer is the one localstripe's walk of the whole store gave.

Counted, not timed: `StoreIndex.visited` counts the entries a listing takes from the index and
every entry any walk of the whole store touches. localstripe runs in this process (its app on
aiohttp's test server), patched as stripe_server.main() patches it, with no state file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import localstripe.resources as ls
import localstripe.server
import pytest
from aiohttp import test_utils

from queue_pipelines.sandbox import stripe_index, stripe_listing
from queue_pipelines.sandbox.servers import free_port, start_localstripe, stop
from queue_pipelines.sandbox.stripe_server import keep_state_in

HEADERS = {"Authorization": "Bearer sk_test_sandbox_speed"}


class Sandbox:
    """localstripe's app served on one event loop for the module (an aiohttp app keeps the
    loop it first ran on)."""

    def __init__(self) -> None:
        self.loop = asyncio.Runner()
        self.http = self.loop.run(self._start())

    @staticmethod
    async def _start() -> test_utils.TestClient:
        http = test_utils.TestClient(test_utils.TestServer(localstripe.server.app))
        await http.start_server()
        return http

    def run(self, scenario: Callable[[test_utils.TestClient], Awaitable[Any]]) -> Any:
        return self.loop.run(scenario(self.http))

    def close(self) -> None:
        self.loop.run(self.http.close())
        self.loop.close()


@pytest.fixture(scope="module")
def sandbox():
    keep_state_in(None)  # localstripe's own default writes /tmp/localstripe.pickle
    stripe_listing.install()
    stripe_index.install(localstripe.server.app)
    ls.store.clear()
    served = Sandbox()
    yield served
    served.close()
    ls.store.clear()


def visited() -> int:
    return stripe_index.store_index().visited


async def call(http, method: str, path: str, **kwargs) -> dict:
    response = await http.request(method, path, headers=HEADERS, **kwargs)
    body = await response.json()
    assert response.status == 200, body
    return body


async def a_payment(http, email: str, amount: int, key: str) -> dict[str, int]:
    """The requests the project makes for one payment and its refund, in its order
    (queue_pipelines/providers/stripe.py), with the entries each one visited."""
    visits: dict[str, int] = {}

    async def counted(name: str, method: str, path: str, **kwargs) -> dict:
        before = visited()
        body = await call(http, method, path, **kwargs)
        visits[name] = visited() - before
        return body

    found = await counted(
        "customers list by email", "GET", "/v1/customers", params={"email": email, "limit": "100"}
    )
    assert found["data"] == []
    customer = await counted(
        "customers create",
        "POST",
        "/v1/customers",
        data={"email": email, "metadata[tenant_id]": "t"},
    )
    intent = await counted(
        "payment_intents create+confirm",
        "POST",
        "/v1/payment_intents",
        data={
            "amount": str(amount),
            "currency": "usd",
            "customer": customer["id"],
            "payment_method": "pm_card_visa",
            "confirm": "true",
            "metadata[tenant_id]": "t",
            "metadata[idempotency_key]": key,
        },
    )
    assert intent["status"] == "succeeded"
    await counted(
        "payment_intents retrieve, expand latest_charge",
        "GET",
        f"/v1/payment_intents/{intent['id']}",
        params={"expand[]": "latest_charge"},
    )
    await counted(
        "refunds list by payment_intent",
        "GET",
        "/v1/refunds",
        params={"payment_intent": intent["id"], "limit": "100"},
    )
    await counted(
        "refunds create",
        "POST",
        "/v1/refunds",
        data={"payment_intent": intent["id"], "amount": "100"},
    )
    mine = await counted(
        "payment_intents list by customer",
        "GET",
        "/v1/payment_intents",
        params={
            "customer": customer["id"],
            "created[gte]": str(int(time.time()) - 60),
            "limit": "100",
        },
    )
    assert [found["id"] for found in mine["data"]] == [intent["id"]]
    await counted("customers retrieve", "GET", f"/v1/customers/{customer['id']}")
    return visits


async def other_payments(http, start: int, count: int) -> None:
    """Other buyers' payments, each with a refund: the store grows in every type the
    project's requests read."""
    for i in range(start, start + count):
        await a_payment(http, f"other{i}@example.com", 1000 + i, f"other-{i}")


def test_a_payments_requests_visit_as_many_entries_on_a_large_store_as_on_a_small_one(sandbox):
    async def scenario(http):
        await other_payments(http, 0, 10)
        small_store = len(ls.store)
        on_small = await a_payment(http, "first@example.com", 2000, "first")
        await other_payments(http, 10, 300)
        large_store = len(ls.store)
        on_large = await a_payment(http, "second@example.com", 2001, "second")
        return small_store, on_small, large_store, on_large

    small_store, on_small, large_store, on_large = sandbox.run(scenario)
    assert large_store > 10 * small_store  # thousands of entries more
    assert on_large == on_small
    # What each visit is: the one refund of the charge the answer exports (several times),
    # the customer and PaymentIntent the listing asks for. Nothing else.
    assert max(on_large.values()) <= 8, on_large


def test_the_count_sees_a_walk_of_the_whole_store(sandbox):
    sandbox.run(lambda http: other_payments(http, 1000, 3))
    before = visited()
    assert sum(1 for _ in ls.store.items()) == len(ls.store)
    assert visited() - before == len(ls.store)
    before = visited()
    # localstripe asks `key in store.keys()` before each create: a hash lookup, not a walk
    assert next(iter(dict.keys(ls.store))) in ls.store.keys()  # noqa: SIM118
    assert visited() == before


def _walked(object_type: str, keep: Callable[[Any], bool]) -> list[str]:
    """What localstripe's walk listed: the store's entries of the type, in store order."""
    prefix = object_type + ":"
    return [
        value.id for key, value in dict.items(ls.store) if key.startswith(prefix) and keep(value)
    ]


def test_listings_answer_as_the_walk_of_the_whole_store_did(sandbox):
    async def scenario(http):
        await other_payments(http, 2000, 5)
        shared = [
            await call(http, "POST", "/v1/customers", data={"email": "shared@example.com"})
            for _ in range(3)
        ]
        # an update moves a customer between e-mails; a deleted one is listed no more
        moved = await call(
            http, "POST", f"/v1/customers/{shared[0]['id']}", data={"email": "moved@example.com"}
        )
        await call(http, "DELETE", f"/v1/customers/{shared[1]['id']}")
        intents = [
            await call(
                http,
                "POST",
                "/v1/payment_intents",
                data={
                    "amount": str(500 + n),
                    "currency": "usd",
                    "customer": shared[2]["id"],
                    "payment_method": "pm_card_visa",
                    "confirm": "true",
                },
            )
            for n in range(3)
        ]
        for amount in (100, 50):
            await call(
                http,
                "POST",
                "/v1/refunds",
                data={"payment_intent": intents[0]["id"], "amount": str(amount)},
            )
        answers = {
            "shared": await call(
                http, "GET", "/v1/customers", params={"email": "shared@example.com", "limit": "100"}
            ),
            "moved": await call(
                http, "GET", "/v1/customers", params={"email": "moved@example.com", "limit": "100"}
            ),
            "intents": await call(
                http,
                "GET",
                "/v1/payment_intents",
                params={"customer": shared[2]["id"], "limit": "100"},
            ),
            "refunds": await call(
                http,
                "GET",
                "/v1/refunds",
                params={"payment_intent": intents[0]["id"], "limit": "100"},
            ),
            "no refunds": await call(
                http, "GET", "/v1/refunds", params={"payment_intent": intents[1]["id"]}
            ),
            "charge": await call(
                http,
                "GET",
                f"/v1/payment_intents/{intents[0]['id']}",
                params={"expand[]": "latest_charge"},
            ),
            "all customers": await call(http, "GET", "/v1/customers", params={"limit": "100"}),
        }
        return moved, intents, answers

    moved, intents, answers = sandbox.run(scenario)

    def ids(listing: dict) -> list[str]:
        return [item["id"] for item in listing["data"]]

    assert moved["email"] == "moved@example.com"
    assert ids(answers["shared"]) == _walked("customer", lambda c: c.email == "shared@example.com")
    assert len(ids(answers["shared"])) == 1
    assert ids(answers["moved"]) == [moved["id"]]
    assert ids(answers["intents"]) == [intent["id"] for intent in intents]
    charge = ls.store[f"payment_intent:{intents[0]['id']}"].latest_charge.id
    refunds = _walked("refund", lambda r: r.charge == charge)
    assert sorted(ids(answers["refunds"])) == sorted(refunds) and len(refunds) == 2
    assert ids(answers["no refunds"]) == []
    assert answers["charge"]["latest_charge"]["amount_refunded"] == 150
    assert answers["charge"]["latest_charge"]["refunds"]["total_count"] == 2
    assert ids(answers["all customers"]) == _walked("customer", lambda _c: True)[:100]


def test_the_server_indexes_what_its_state_file_brings_back(tmp_path):
    """stripe_server.main() installs the index before it loads the state file: after a
    restart the customers saved before are found by e-mail, through the index."""
    port, state = free_port(), tmp_path / "stripe.pickle"
    url = f"http://127.0.0.1:{port}"
    sandbox = start_localstripe(port, state_file=state)
    try:
        created = httpx.post(
            f"{url}/v1/customers", data={"email": "kept@example.com"}, headers=HEADERS
        ).json()
    finally:
        stop(sandbox)

    sandbox = start_localstripe(port, state_file=state)
    try:
        before = httpx.get(f"{url}/_config/store_index").json()
        found = httpx.get(
            f"{url}/v1/customers", params={"email": "kept@example.com"}, headers=HEADERS
        ).json()
        after = httpx.get(f"{url}/_config/store_index").json()
    finally:
        stop(sandbox)
    assert [customer["id"] for customer in found["data"]] == [created["id"]]
    assert before["by_type"]["customer"] == 1
    assert after["visited"] - before["visited"] == 1  # the one customer, no walk


def test_with_a_state_file_a_request_writes_the_store_once(sandbox, tmp_path):
    """The state file is the one walk of the whole store left (make run keeps one): written
    once per POST, not after each of the request's writes to the store (~8 a payment)."""
    state = tmp_path / "stripe.pickle"
    keep_state_in(state)
    try:

        async def scenario(http):
            customer = await call(http, "POST", "/v1/customers", data={"email": "f@example.com"})
            before = visited()
            await call(
                http,
                "POST",
                "/v1/payment_intents",
                data={
                    "amount": "700",
                    "currency": "usd",
                    "customer": customer["id"],
                    "payment_method": "pm_card_visa",
                    "confirm": "true",
                },
            )
            return visited() - before

        visits = sandbox.run(scenario)
    finally:
        keep_state_in(None)
    assert state.exists()
    assert visits == len(ls.store)  # one dump; the payment's own lookups visit nothing
