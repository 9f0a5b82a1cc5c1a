"""What every intake-driven job shares: its run config, its retry policy, its failures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
import redis
import sqlalchemy.exc
from pydantic import BaseModel, ValidationError

from queue_pipelines.failures import ProviderError
from queue_pipelines.intake.schema import Envelope, describe_validation_error

# Transient failures (network, timeouts, 429, 5xx) back off exponentially: 2 s, 4 s, 8 s, 16 s,
# 32 s, each within ±delay of jitter so that a burst of failed runs does not retry in step.
TRANSIENT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=5, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class IntakeRequestConfig(dg.Config):
    """The request a run serves, as the intake sensor wrote it (or an operator, by hand)."""

    tenant_id: str
    idempotency_key: str
    payload: dict[str, Any]

    def parsed(self, model: type[PayloadT]) -> PayloadT:
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise dg.Failure(
                description=f"invalid payload: {describe_validation_error(exc, prefix='payload')}",
                allow_retries=False,
            ) from None


def run_is_live(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a run is still going: the ledger's test before taking over another run's claim."""

    def is_live(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    return is_live


def request_run_config(op_name: str, envelope: Envelope) -> dict[str, Any]:
    return {
        "ops": {
            op_name: {
                "config": {
                    "tenant_id": envelope.tenant_id,
                    "idempotency_key": envelope.idempotency_key,
                    "payload": envelope.payload.model_dump(mode="json", exclude_none=True),
                }
            }
        }
    }


# Infrastructure hiccups worth retrying besides a provider's own transient errors: the
# ledger's database or Redis dropping a connection, a socket timing out.
TRANSIENT_INFRASTRUCTURE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)


@contextmanager
def classified_failures() -> Iterator[None]:
    """Let only transient failures reach the retry policy. A permanent provider error, or a
    failure nobody foresaw (a bug will not fix itself on retry), stops the op at once."""
    try:
        yield
    except dg.Failure:
        raise
    except ProviderError as exc:
        if not exc.permanent:
            raise
        raise dg.Failure(
            description=exc.reason,
            metadata={"failure_class": "permanent", "code": exc.code or ""},
            allow_retries=False,
        ) from exc
    except TRANSIENT_INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:
        raise dg.Failure(
            description=f"unexpected {type(exc).__name__}: {exc}",
            metadata={"failure_class": "unexpected"},
            allow_retries=False,
        ) from exc
