"""`queue-pipelines enqueue customer`: a customer created, renamed and deleted from a shell,
with the customer id printed where the operator looks (`--wait`, `request show`)."""

from __future__ import annotations

import json
import re

from tests.cli.test_cli import run, waiting
from tests.support.harness import IntakeHarness


def test_a_customer_created_renamed_and_deleted_from_the_cli(
    redis_url, key_prefix, instance, resources, intake, tenant, postgres_url, stripe_resource
):
    def enqueue_and_run(key: str, *flags: str) -> str:
        started = waiting(
            redis_url, key_prefix, intake, postgres_url, "customer",
            "--tenant", tenant, "--key", key, *flags,
        )  # fmt: skip
        IntakeHarness(instance, resources, "customer").drain()
        code, out, err = started.ended()
        assert code == 0, out + err
        return out

    created = enqueue_and_run(
        "c-1", "--action", "create", "--email", "Ada@Example.com", "--name", "Ada",
        "--payload", '{"metadata": {"crm": "7"}}',
    )  # fmt: skip
    [customer_id] = re.findall(r"customer_id: (cus_\w+)", created)
    assert "  action: create" in created and "  email: ada@example.com" in created
    made = stripe_resource.api().retrieve_customer(customer_id)
    assert (made.name, made.metadata["crm"], made.tenant_id) == ("Ada", "7", tenant)

    renamed = enqueue_and_run("c-2", "--action", "update", "--customer", customer_id,
                              "--name", "Ada L.")  # fmt: skip
    assert "  name: Ada L." in renamed
    enqueue_and_run("c-3", "--action", "delete", "--customer", customer_id)
    assert stripe_resource.api().retrieve_customer(customer_id) is None

    code, out, _ = run(
        redis_url, key_prefix, "--ledger-url", postgres_url,
        "request", "show", f"customer:{tenant}:c-3", "--json",
    )  # fmt: skip
    assert code == 0
    effect = json.loads(out)["effect"]
    assert (effect["action"], effect["customer_id"]) == ("delete", customer_id)


def test_enqueue_customer_refuses_a_request_that_misses_what_its_action_needs(
    redis_url, key_prefix, intake
):
    code, _, err = run(redis_url, key_prefix, "enqueue", "customer", "--action", "update",
                       "--name", "Nobody")  # fmt: skip
    assert code == 2 and "update needs the customer_id (cus_...)" in err

    code, _, err = run(redis_url, key_prefix, "enqueue", "customer", "--action", "create",
                       "--email", "a@example.com", "--payload", '{"metadata": {"tenant_id": "x"}}')  # fmt: skip
    assert code == 2 and "metadata key(s) tenant_id are set by the service" in err
    assert intake.client.exists(intake.stream_key("customer")) == 0
