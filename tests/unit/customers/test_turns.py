"""Which requests of a customer batch take turns (queue_pipelines/customers.py `turns_of`,
through the request runner's lanes): those on one customer, and those on one e-mail, a
create's or the one an update moves a customer to."""

from __future__ import annotations

import threading
import time

from queue_pipelines.customers import turns_of
from queue_pipelines.intake.payloads import CustomerPayload
from queue_pipelines.request_runner import Backoff, Item, process_items

IMMEDIATE = Backoff(attempts=1, first_delay=0.0, max_delay=0.0, jitter=0.0)


def test_an_update_takes_its_turn_by_its_customer_and_the_email_it_sets():
    move = CustomerPayload(action="update", customer_id="cus_1", email="New@Example.com")
    assert turns_of(move) == ["cus_1", "new@example.com"]
    assert turns_of(CustomerPayload(action="update", customer_id="cus_1", name="A")) == ["cus_1"]
    assert turns_of(CustomerPayload(action="create", email="A@example.com")) == ["a@example.com"]
    assert turns_of(CustomerPayload(action="delete", customer_id="cus_2")) == ["cus_2"]


def test_a_create_and_an_update_moving_another_customer_onto_its_email_run_one_after_the_other():
    requests = {
        "create": CustomerPayload(action="create", email="Shared@example.com"),
        "move": CustomerPayload(
            action="update", customer_id="cus_other", email="shared@example.com"
        ),
        "then delete": CustomerPayload(action="delete", customer_id="cus_other"),
        "elsewhere": CustomerPayload(action="update", customer_id="cus_third", name="X"),
    }
    items = [Item(name, (name, payload)) for name, payload in requests.items()]
    log: list[tuple[str, str]] = []  # list.append is atomic: the lanes' threads share it
    elsewhere_started = threading.Event()

    def handle(request):
        name, _payload = request
        log.append(("start", name))
        if name == "elsewhere":
            elsewhere_started.set()
        elif name == "create":
            # The other lane runs meanwhile; a "move" in a lane of its own would start too.
            assert elsewhere_started.wait(timeout=30), "the other lane did not run at once"
            time.sleep(0.2)
        log.append(("end", name))
        return {}

    process_items(
        items,
        handle,
        concurrency=4,
        backoff=IMMEDIATE,
        turns_of=lambda request: turns_of(request[1]),
    )

    in_turn = [event for event in log if event[1] != "elsewhere"]
    assert in_turn == [
        ("start", "create"), ("end", "create"), ("start", "move"), ("end", "move"),
        ("start", "then delete"), ("end", "then delete"),
    ]  # fmt: skip
