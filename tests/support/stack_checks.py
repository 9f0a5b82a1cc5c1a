"""What the stack tests read back: the CLI as a producer runs it, localstripe's PaymentIntents,
the intake and dead-letter streams. Counts at these levels hold whether a run serves one
request or a batch of them."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

from queue_pipelines.intake.streams import GROUP, IntakeStreams
from resources import StripeResource


def cli(redis_url: str, prefix: str, *argv: str, stdin: str | None = None) -> str:
    """`queue-pipelines ...` as its own process, as an operator or producer runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "queue_pipelines.cli", "--redis-url", redis_url,
         "--prefix", prefix, *argv],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"queue-pipelines {' '.join(argv)}: {result.stderr}")
    return result.stdout


def payment_line(tenant: str, key: str, amount: int = 1200) -> str:
    return json.dumps(
        {
            "type": "payment",
            "version": 1,
            "tenant_id": tenant,
            "idempotency_key": key,
            "payload": {
                "order_id": key,
                "amount": amount,
                "currency": "usd",
                "customer_email": f"{key}@example.com",
                "payment_method": "pm_card_visa",
            },
        }
    )


def enqueue_payments(redis_url: str, prefix: str, tenant: str, keys: list[str]) -> None:
    out = cli(
        redis_url, prefix, "enqueue", "--file", "-",
        stdin="\n".join(payment_line(tenant, key) for key in keys) + "\n",
    )  # fmt: skip
    assert f"enqueued {len(keys)}, rejected 0" in out, out


def charges_by_key(stripe_url: str, tenant: str) -> collections.Counter:
    """PaymentIntents in localstripe for `tenant`, counted by their idempotency_key metadata."""
    client = (
        StripeResource(secret_key="sk_test_queue_pipelines", api_base=stripe_url).api().client()
    )
    counts: collections.Counter = collections.Counter()
    for intent in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
        metadata = intent.metadata.to_dict() if intent.metadata is not None else {}
        if metadata.get("tenant_id") == tenant:
            counts[metadata.get("idempotency_key")] += 1
    return counts


def intake_left(intake: IntakeStreams, job_type: str) -> tuple[int, int]:
    """(entries still in the stream, entries pending in the consumer group)."""
    key = intake.stream_key(job_type)
    length = intake.client.xlen(key)
    try:
        pending = intake.client.xpending(key, GROUP)["pending"]
    except Exception:  # noqa: BLE001 - no group yet
        pending = 0
    return length, pending


def outcomes_by_key(intake: IntakeStreams, job_type: str, tenant: str, keys: list[str]) -> dict:
    """The outcome the intake recorded for each of `tenant`'s requests that has one, by
    idempotency key: a request is settled once its run recorded how it ended."""
    found = intake.outcomes([f"{job_type}:{tenant}:{key}" for key in keys])
    return {request_key.split(":", 2)[2]: outcome for request_key, outcome in found.items()}
