"""The kill switch as the operator presses it, from `lsq halt` or the web monitor: one path for both.

The switch file is written first (executors.safety: the executor reads it before every child order), so whatever
the exchange answers afterwards nothing more is sent. A full halt then cancels our resting orders at once, through
the executor's own reconciliation: orders with our client-id prefix only, the others are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from executors.journal import Journal, journal_path
from executors.reconcile import reconcile
from executors.router import OrderRouter
from executors.safety import HaltMode, HaltState, set_halt
from lsq.clock import Clock
from lsq.config import Settings
from lsq.paths import DataPaths


@dataclass(frozen=True)
class HaltOutcome:
    state: HaltState
    cancelled: int | None = None  # our resting orders cancelled now (a full halt that reached the exchange)
    foreign: int | None = None  # open orders that are not ours, left alone
    cancel_error: str | None = None  # the cancel failed; the switch holds anyway


def cancel_our_orders(settings: Settings, account_id: str, clock: Clock) -> tuple[int, int]:
    """Cancel our resting orders now; returns (ours cancelled, others left alone)."""
    from lsq.exchange import account_client  # python-binance only when the exchange is reached

    client = account_client(settings, account_id)
    with Journal(journal_path(DataPaths(settings.data_dir), account_id)) as journal:
        router = OrderRouter(account_id, client, journal, clock, "halt", 0)
        state = reconcile(client, journal, router, clock.now_ms(), dry_run=False)
    return len(state.cancelled), len(state.foreign)


def halt_account(settings: Settings, account_id: str, mode: HaltMode, reason: str, clock: Clock) -> HaltOutcome:
    """Set the account's switch (halt or reduce-only); on a full halt also cancel our resting orders now."""
    state = set_halt(DataPaths(settings.data_dir), account_id, mode, reason, clock.now_ms())
    if mode != "halt":
        return HaltOutcome(state)
    try:
        cancelled, foreign = cancel_our_orders(settings, account_id, clock)
    except Exception as exc:  # unreachable exchange, no keys, a refusal: the switch is set, report and go on
        return HaltOutcome(state, cancel_error=f"{type(exc).__name__}: {exc}")
    return HaltOutcome(state, cancelled, foreign)
