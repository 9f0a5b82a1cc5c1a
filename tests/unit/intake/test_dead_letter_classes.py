"""dead_letters_total's failure class is read from a letter's reason, as the intake words its
reasons (intake/dispatch.py, intake/settling.py): each wording reaches its class."""

from __future__ import annotations

import pytest

from queue_pipelines.intake.dead_letter_stream import failure_class


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("rejected: payload.amount: must be positive", "rejected"),
        (
            "rejected: idempotency key 'k' was first used for a different payment request",
            "rejected",
        ),
        (
            "run r1 ended; 20 runs of the request ended before any step started, so nothing "
            "was done for it: replay it once the stack launches runs again",
            "not_started",
        ),
        ("run r1 ended; the request was not settled after 3 runs", "unsettled"),
        ("card declined: Your card was declined. (card_declined)", "failed"),
        ("invalid payload: payload.amount: field required", "failed"),
    ],
)
def test_each_wording_of_the_intake_reaches_its_class(reason, expected):
    assert failure_class(reason) == expected
