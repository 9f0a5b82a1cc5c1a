"""At most once per key: the one protocol every external effect follows (a charge, a refund,
a customer, a mint, a transfer, an e-mail, a webhook).

    claim the key in the effect ledger
      -> done already: replay what was recorded, act not
      -> in doubt (an earlier attempt claimed it and never recorded an outcome: its worker
         died, or lost the provider's answer): ask the provider what happened, and record
         that if it happened
      -> act: one provider call (or one atomic transaction)
      -> record the result at once, before anything else runs
    A refusal by the provider (by default a PermanentError from `act`) means nothing happened: the claim
    is released, and a later attempt (an operator's replay after fixing the cause) starts
    afresh. Any other failure of `act` leaves the claim in doubt. A provider that says an
    earlier call with this key reached it (SentBefore) proves the opposite of a refusal: the
    effect is looked for at once, and a claim whose effect cannot be found is left in doubt
    for an operator, never acted on again.

Once the provider has answered, nothing can turn its answer into a retry or a failure: the
result is recorded before any bookkeeping, metric, outcome write or notice, and a ledger that
cannot take the record leaves the claim in doubt, which the next attempt settles by asking
the provider, never by acting again on a guess. A provider's own idempotency key (Stripe keeps
them 24 hours) is the second line behind this one, not the first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc

from queue_pipelines.failures import PermanentError, ProviderError, SentBefore, TransientError
from queue_pipelines.ledger import Claim, EffectLedger

log = logging.getLogger("queue_pipelines.effects")

Result = dict[str, Any]
# The ledger row that names the effect by another key (a mint by its address), written with
# the record: (key, kind, result), built from the effect's result.
IndexOf = Callable[[Result], tuple[str, str, Result] | None]
# Pauses before each further try to record an effect that happened.
RECORD_RETRY_DELAYS = (0.1, 0.5, 2.0)


@dataclass(frozen=True)
class Effect:
    result: Result
    replayed: bool  # True: an earlier attempt acted; nothing was done now


class EffectUnrecorded(TransientError):
    """The provider acted, and the ledger could not take the record. The claim stays in doubt:
    the next attempt asks the provider and records what it says, rather than acting again."""

    def __init__(self, key: str, exc: BaseException):
        super().__init__(
            f"{key} happened, but the effect ledger could not record it ({type(exc).__name__}: "
            f"{exc}); the next attempt asks the provider instead of acting again",
            code="unrecorded",
        )


class LeftInDoubt(ProviderError):
    """The provider saw this key before and has no effect for it that can be found: only a
    person can tell what happened. Permanent, and not a refusal: the claim stays pending, so
    that no later attempt (a replay days later, once the provider forgot the key) acts."""

    def __init__(self, key: str, seen: str):
        super().__init__(
            f"{key}: the provider says an earlier call with this request's key reached it "
            f"({seen}), and no effect of it can be found: left in doubt for an operator, who "
            "looks for it at the provider (docs/guarantees.md); nothing is sent again under "
            "this key",
            permanent=True,
            code="needs_reconciliation",
        )


# The claim's note that the provider has seen its key (SentBefore).
SEEN_BY_PROVIDER = "seen_by_provider"


def act_again(_claim: Claim) -> Result | None:
    """For effects whose `act` asks the provider itself before acting (a mint at an address
    derived from its key, a transfer that checks the holder, a webhook the receiver
    de-duplicates by its id): in doubt, simply act again."""
    return None


def act_once(
    ledger: EffectLedger,
    key: str,
    kind: str,
    run_id: str,
    act: Callable[[], Result],
    *,
    in_doubt: Callable[[Claim], Result | None],
    run_is_live: Callable[[str], bool] = lambda _run_id: False,
    index_of: IndexOf | None = None,
    refusals: tuple[type[BaseException], ...] = (PermanentError,),
) -> Effect:
    """Do the effect `act` at most once for `key` (see the module's protocol).

    `in_doubt(claim)` is asked when an earlier attempt never recorded its outcome: it returns
    that attempt's result, found at the provider; or None when the provider has no trace of
    it, and `act` runs; or raises PermanentError when nobody can know (SMTP keeps no record),
    so that an operator decides. `refusals` are the errors of `act` that mean nothing
    happened (a sender that says the server did not take the message): the claim goes."""
    claim = ledger.claim(key, kind, run_id, run_is_live)
    if claim.done:
        return Effect(claim.result or {}, replayed=True)
    if claim.resumed:
        found = in_doubt(claim)
        if found is not None:
            log.info("%s: in doubt; the provider has it: recorded without acting again", key)
            _record(ledger, key, found, index_of)
            return Effect(found, replayed=True)
        if claim.notes.get(SEEN_BY_PROVIDER):
            raise LeftInDoubt(key, claim.notes[SEEN_BY_PROVIDER][0])
    try:
        result = act()
    except SentBefore as exc:
        # Noted before the look, so that no attempt after a failed look acts again.
        ledger.note(key, SEEN_BY_PROVIDER, exc.reason)
        found = in_doubt(claim)
        if found is None:
            raise LeftInDoubt(key, exc.reason) from exc
        log.info("%s: the provider saw the key before; found its effect: recorded", key)
        _record(ledger, key, found, index_of)
        return Effect(found, replayed=True)
    except refusals:
        ledger.release(key)
        raise
    _record(ledger, key, result, index_of)
    return Effect(result, replayed=False)


def _record(ledger: EffectLedger, key: str, result: Result, index_of: IndexOf | None) -> None:
    index = index_of(result) if index_of else None
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            ledger.record(key, result, index=index)
            return
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if delay is None:
                raise EffectUnrecorded(key, exc) from exc
            log.warning("%s: recording failed (%s); trying again in %.1f s", key, exc, delay)
            time.sleep(delay)
