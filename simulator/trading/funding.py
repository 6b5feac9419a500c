"""Funding settlements: every funding event of a held symbol paid exactly once, from the stored watermark.

Funding goes to the wallet (and to the isolated wallet of an isolated position), as a FUNDING_FEE income with an
ACCOUNT_UPDATE. Settling is lazy (when an account is touched, and on the server's tick) and idempotent across restarts.
"""

from __future__ import annotations

from decimal import Decimal

from simulator.trading import margin as m
from simulator.trading.ledger import Change, Ledger
from simulator.trading.state import AccountState, Position

FUNDING_PAGE = 1000
FUNDING_LOOKAHEAD_MS = 24 * 3600 * 1000


class Funding:
    """Settles funding for the accounts of one ledger; remembers each symbol's next funding time."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._next_funding: dict[str, tuple[int, int]] = {}

    def settle(self, change: Change, account: AccountState, now: int) -> None:
        """Apply every funding event in (funding_settled_ms, now] to the positions held, exactly once.

        Positions only change inside a change that also writes the account (with this watermark), so after a
        restart re-settling from the stored watermark pays exactly the events not yet paid."""
        start = account.funding_settled_ms
        if now <= start:
            return
        held: dict[str, list[Position]] = {}
        for p in self.ledger.positions_of(account.account_id):
            if p.amount != 0:
                held.setdefault(p.symbol, []).append(p)
        for symbol in sorted(held):
            if not self._due(symbol, start, now):
                continue
            for event in self._events(symbol, start, now):
                rate, mark, when = Decimal(event["fundingRate"]), Decimal(event["markPrice"]), int(event["fundingTime"])
                touched = []
                total = m.ZERO
                for p in held[symbol]:
                    pay = m.funding_payment(p.amount, mark, rate)
                    if pay == 0:
                        continue
                    account.wallet += pay
                    total += pay
                    if account.isolated(symbol):
                        p.isolated_wallet += pay
                    p.update_time = when
                    touched.append(p)
                    self.ledger.add_income(change, account.account_id, symbol, "FUNDING_FEE", pay, when)
                if touched:
                    account.update_time = when
                    change.touch(account, *touched)
                    change.emit(
                        account.account_id, self.ledger.account_event("FUNDING_FEE", account, touched, total, now)
                    )
        account.funding_settled_ms = now

    def _due(self, symbol: str, after: int, now: int) -> bool:
        """Whether a funding time of `symbol` lies in (after, now]. Remembers, per symbol, the first funding time
        after the last time looked at, so the many requests between two funding times skip the market."""
        looked_at, upcoming = self._next_funding.get(symbol, (None, None))
        if looked_at is not None and upcoming is not None and after >= looked_at and upcoming > now:
            return False
        due = bool(self.ledger.market.funding_times(symbol, after + 1, now + 1))
        ahead = self.ledger.market.funding_times(symbol, now + 1, now + FUNDING_LOOKAHEAD_MS)
        self._next_funding[symbol] = (now, ahead[0] if ahead else now + FUNDING_LOOKAHEAD_MS)
        return due

    def _events(self, symbol: str, start: int, now: int) -> list[dict]:
        events: list[dict] = []
        cursor = start + 1
        while cursor <= now:
            page = self.ledger.market.funding_rates(symbol, cursor, now, FUNDING_PAGE, now_ms=now)
            page = [e for e in page if cursor <= int(e["fundingTime"]) <= now]
            events += page
            if len(page) < FUNDING_PAGE:
                break
            cursor = int(page[-1]["fundingTime"]) + 1
        return sorted(events, key=lambda e: int(e["fundingTime"]))
