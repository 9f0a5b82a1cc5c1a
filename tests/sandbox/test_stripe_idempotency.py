"""The Stripe sandbox honours Idempotency-Key as Stripe documents it
(queue_pipelines/sandbox/stripe_idempotency.py): against the real server, through the stripe
SDK as queue_pipelines/providers/stripe.py calls it, or raw HTTP where a header is read."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import stripe
from aiohttp import test_utils, web

from queue_pipelines.sandbox.servers import free_port, start_localstripe, stop
from queue_pipelines.sandbox.stripe_idempotency import KEPT_FOR_SECONDS, IdempotencyLayer

API_KEY = "sk_test_idempotency_a"
OTHER_API_KEY = "sk_test_idempotency_b"


def client(url: str, api_key: str = API_KEY) -> stripe.StripeClient:
    # SDK retries off: every request the test makes reaches the server once.
    return stripe.StripeClient(api_key, base_addresses={"api": url}, max_network_retries=0)


def new_tag() -> str:
    return uuid.uuid4().hex


def charge(url: str, tag: str, key: str | None, *, amount: int = 1500, api_key: str = API_KEY):
    params = {
        "amount": amount,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "metadata": {"test_tag": tag},
    }
    options = {"idempotency_key": key} if key else {}
    return client(url, api_key).v1.payment_intents.create(params=params, options=options)


def raw_charge(url: str, tag: str, key: str | None, api_key: str = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key}"}
    if key:
        headers["Idempotency-Key"] = key
    form = {"amount": "1500", "currency": "usd", "metadata[test_tag]": tag}
    return httpx.post(f"{url}/v1/payment_intents", data=form, headers=headers, timeout=10)


def intents_tagged(url: str, tag: str) -> list[str]:
    listing = client(url).v1.payment_intents.list(params={"limit": 100})
    return [
        intent.id
        for intent in listing.auto_paging_iter()
        if intent.metadata is not None and intent.metadata.to_dict().get("test_tag") == tag
    ]


def test_same_key_and_parameters_replay_the_first_payment_intent(idempotent_localstripe_url):
    url, tag, key = idempotent_localstripe_url, new_tag(), f"order-{new_tag()}"
    first = charge(url, tag, key)
    again = charge(url, tag, key)
    assert again.id == first.id
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert intents_tagged(url, tag) == [first.id]


def test_a_replay_says_so_in_its_headers_and_returns_the_first_body(idempotent_localstripe_url):
    url, tag, key = idempotent_localstripe_url, new_tag(), f"raw-{new_tag()}"
    first = raw_charge(url, tag, key)
    again = raw_charge(url, tag, key)
    assert first.status_code == again.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"].startswith("application/json")
    assert again.content == first.content
    assert intents_tagged(url, tag) == [first.json()["id"]]


def test_same_key_with_other_parameters_is_an_idempotency_error(idempotent_localstripe_url):
    url, tag, key = idempotent_localstripe_url, new_tag(), f"order-{new_tag()}"
    first = charge(url, tag, key, amount=1500)
    with pytest.raises(stripe.IdempotencyError) as raised:
        charge(url, tag, key, amount=1600)
    assert raised.value.http_status == 400
    error = raised.value.json_body["error"]
    assert error["type"] == "idempotency_error"
    assert error["message"].startswith(
        "Keys for idempotent requests can only be used with the same parameters"
    )
    assert intents_tagged(url, tag) == [first.id]


def test_same_key_on_another_endpoint_is_an_idempotency_error(idempotent_localstripe_url):
    url, key = idempotent_localstripe_url, f"order-{new_tag()}"
    client(url).v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": key}
    )
    with pytest.raises(stripe.IdempotencyError, match="same endpoint"):
        charge(url, new_tag(), key)


def test_keys_belong_to_their_api_key(idempotent_localstripe_url):
    url, tag, key = idempotent_localstripe_url, new_tag(), f"order-{new_tag()}"
    mine = charge(url, tag, key, api_key=API_KEY)
    theirs = charge(url, tag, key, api_key=OTHER_API_KEY)
    assert theirs.id != mine.id
    assert theirs.last_response.headers.get("Idempotent-Replayed") is None
    assert sorted(intents_tagged(url, tag)) == sorted([mine.id, theirs.id])


def test_basic_auth_names_the_same_api_key_as_bearer(idempotent_localstripe_url):
    url, tag, key = idempotent_localstripe_url, new_tag(), f"raw-{new_tag()}"
    first = raw_charge(url, tag, key)
    form = {"amount": "1500", "currency": "usd", "metadata[test_tag]": tag}
    again = httpx.post(
        f"{url}/v1/payment_intents",
        data=form,
        auth=(API_KEY, ""),
        headers={"Idempotency-Key": key},
        timeout=10,
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_without_the_header_every_post_acts(idempotent_localstripe_url):
    url, tag = idempotent_localstripe_url, new_tag()
    first, second = raw_charge(url, tag, None), raw_charge(url, tag, None)
    assert first.json()["id"] != second.json()["id"]
    assert len(intents_tagged(url, tag)) == 2


def test_get_requests_ignore_the_header(idempotent_localstripe_url):
    url, key = idempotent_localstripe_url, f"order-{new_tag()}"
    customer = client(url).v1.customers.create(
        params={"email": "before@example.com"}, options={"idempotency_key": key}
    )
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key}
    path = f"{url}/v1/customers/{customer.id}"
    seen = httpx.get(path, headers=headers, timeout=10)
    client(url).v1.customers.update(customer.id, params={"email": "after@example.com"})
    seen_again = httpx.get(path, headers=headers, timeout=10)
    assert seen.status_code == seen_again.status_code == 200
    assert "Idempotent-Replayed" not in seen_again.headers
    assert (seen.json()["email"], seen_again.json()["email"]) == (
        "before@example.com",
        "after@example.com",
    )


def test_a_declined_card_stays_declined_under_its_key(idempotent_localstripe_url):
    url, key = idempotent_localstripe_url, f"order-{new_tag()}"
    params = {
        "amount": 1500,
        "currency": "usd",
        "payment_method": "pm_card_chargeCustomerFail",
        "confirm": True,
    }
    replayed = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            client(url).v1.payment_intents.create(params=params, options={"idempotency_key": key})
        replayed.append(raised.value.headers.get("Idempotent-Replayed"))
    assert replayed == [None, "true"]


def test_a_request_refused_by_validation_is_not_saved(idempotent_localstripe_url):
    # Stripe saves a result only once the endpoint began executing: fixing the parameters
    # under the same key then works.
    url, tag, key = idempotent_localstripe_url, new_tag(), f"order-{new_tag()}"
    with pytest.raises(stripe.InvalidRequestError):
        charge(url, tag, key, amount=-1)
    assert charge(url, tag, key).status == "succeeded"


def test_with_the_switch_off_one_key_makes_two_payment_intents(localstripe_url):
    # The project's own fixture: the ledger tests run without Stripe's second line.
    url, tag, key = localstripe_url, new_tag(), f"order-{new_tag()}"
    first, second = charge(url, tag, key), charge(url, tag, key)
    assert first.id != second.id
    assert second.last_response.headers.get("Idempotent-Replayed") is None
    assert sorted(intents_tagged(url, tag)) == sorted([first.id, second.id])


def test_saved_keys_survive_a_restart_with_the_state_file(tmp_path):
    port, state = free_port(), tmp_path / "stripe.pickle"
    url, tag, key = f"http://127.0.0.1:{port}", new_tag(), f"order-{new_tag()}"
    sandbox = start_localstripe(port, state_file=state)
    try:
        first = charge(url, tag, key)
    finally:
        stop(sandbox)

    sandbox = start_localstripe(port, state_file=state)
    try:
        again = charge(url, tag, key)
        assert again.id == first.id
        assert again.last_response.headers.get("Idempotent-Replayed") == "true"
        assert intents_tagged(url, tag) == [first.id]
    finally:
        stop(sandbox)


# The layer on an app of the test's own: a clock to move and a handler to hold in flight.


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def counting_app(layer: IdempotencyLayer, release: asyncio.Event | None = None):
    calls: list[str] = []

    async def create(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Idempotency-Key", ""))
        if release is not None:
            await release.wait()
        return web.json_response({"id": f"obj_{len(calls)}"})

    app = web.Application(middlewares=[layer.middleware])
    app.router.add_post("/v1/things", create)
    return app, calls


HEADERS = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "k"}


def test_keys_expire_after_24_hours():
    clock = Clock()
    records: dict = {}
    layer = IdempotencyLayer(lambda: records, clock=clock)
    app, calls = counting_app(layer)

    async def scenario() -> list[tuple[str, str | None]]:
        answers = []
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            for step in (0, KEPT_FOR_SECONDS - 1, 2):
                clock.now += step
                response = await http.post("/v1/things", data={"a": "1"}, headers=HEADERS)
                answers.append(
                    ((await response.json())["id"], response.headers.get("Idempotent-Replayed"))
                )
        return answers

    assert asyncio.run(scenario()) == [("obj_1", None), ("obj_1", "true"), ("obj_2", None)]
    assert calls == ["k", "k"]
    assert len(records) == 1


def test_a_key_in_flight_answers_409_and_does_not_act_twice():
    records: dict = {}
    release = asyncio.Event()
    app, calls = counting_app(IdempotencyLayer(lambda: records), release)

    async def scenario() -> tuple[int, dict, int, str | None]:
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            first = asyncio.create_task(http.post("/v1/things", data={"a": "1"}, headers=HEADERS))
            while not calls:
                await asyncio.sleep(0.01)
            concurrent = await http.post("/v1/things", data={"a": "1"}, headers=HEADERS)
            release.set()
            await first
            after = await http.post("/v1/things", data={"a": "1"}, headers=HEADERS)
            return (
                concurrent.status,
                await concurrent.json(),
                after.status,
                after.headers.get("Idempotent-Replayed"),
            )

    status, body, after_status, replayed = asyncio.run(scenario())
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_in_use"
    assert (after_status, replayed) == (200, "true")
    assert calls == ["k"]


def test_parameters_compare_as_parsed_not_as_encoded():
    records: dict = {}
    app, calls = counting_app(IdempotencyLayer(lambda: records))

    async def scenario() -> list[str | None]:
        async with test_utils.TestClient(test_utils.TestServer(app)) as http:
            replayed = []
            for body in ("a=1&b=2", "b=2&a=1"):
                response = await http.post(
                    "/v1/things",
                    data=body,
                    headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
                )
                replayed.append(response.headers.get("Idempotent-Replayed"))
            return replayed

    assert asyncio.run(scenario()) == [None, "true"]
    assert calls == ["k"]
