"""What the jobs share besides batches: failure classes for single-step ops, run liveness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from queue_pipelines.failures import ProviderError
from queue_pipelines.request_runner import TRANSIENT_INFRASTRUCTURE_ERRORS


def run_is_live(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a run is still going: the ledger's test before taking over another run's claim."""

    def is_live(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    return is_live


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
