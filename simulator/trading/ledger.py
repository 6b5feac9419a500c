"""The simulated accounts' records in memory, their SQLite mirror, and the one way to change them.

Every state change runs inside `Ledger.change()`: the records it touched are committed to SQLite in one transaction,
then its user-data events are published, so a crash leaves the whole change or none of it and no event announces
what was not stored. The order, funding and valuation modules all read and change the accounts through one Ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from simulator.errors import BinanceError, invalid_symbol
from simulator.trading import margin as m
from simulator.trading.events import account_update
from simulator.trading.rules import Rules
from simulator.trading.state import (
    AccountState,
    Countdown,
    Counters,
    Income,
    ListenKey,
    Order,
    Position,
    Record,
    Store,
    Trade,
)

Publish = Callable[[str, dict], None]


class MarketModel(Protocol):
    """What the engine needs from simulator.market.Market."""

    @property
    def instruments(self) -> Any: ...  # symbol -> Instrument, or the instruments themselves

    def instrument(self, symbol: str) -> Any: ...
    def mid_price(self, symbol: str, now_ms: int) -> Decimal: ...
    def mark_price(self, symbol: str, now_ms: int) -> Decimal: ...
    def funding_times(self, symbol: str, start_ms: int, end_ms: int) -> list[int]: ...  # [start, end)
    def funding_rates(self, symbol: str, start_ms: int, end_ms: int, limit: int, *, now_ms: int) -> list[dict]: ...


@dataclass
class Change:
    """Records touched and events raised by one state change; committed together."""

    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    deleted: dict[tuple[str, str], Record] = field(default_factory=dict)
    events: list[tuple[str, dict]] = field(default_factory=list)

    def touch(self, *records: Record) -> None:
        for r in records:
            self.records[(r.kind, r.key)] = r

    def delete(self, record: Record) -> None:
        self.records.pop((record.kind, record.key), None)
        self.deleted[(record.kind, record.key)] = record

    def emit(self, account_id: str, event: dict) -> None:
        self.events.append((account_id, event))


class Ledger:
    """Every account's records. Thread-safe: changes and reads that must see one state hold `lock`."""

    def __init__(self, market: MarketModel, store: Store, publish: Publish) -> None:
        self.market = market
        self.store = store
        self.publish = publish
        self.lock = threading.RLock()
        self._rules: dict[str, Rules] = {}
        self._prices_at = -1
        self._prices: dict[tuple[str, str], Decimal] = {}
        self.load()

    def load(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.positions: dict[tuple[str, str, str], Position] = {}
        self.orders: dict[int, Order] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.income: dict[str, list[Income]] = {}
        self.listen_keys: dict[str, ListenKey] = {}
        self.countdowns: dict[tuple[str, str], Countdown] = {}
        self.counters = Counters()
        for record in self.store.load():
            if isinstance(record, AccountState):
                self.accounts[record.account_id] = record
            elif isinstance(record, Position):
                self.positions[(record.account_id, record.symbol, record.side)] = record
            elif isinstance(record, Order):
                self.orders[record.order_id] = record
            elif isinstance(record, Trade):
                self.trades.setdefault(record.account_id, []).append(record)
            elif isinstance(record, Income):
                self.income.setdefault(record.account_id, []).append(record)
            elif isinstance(record, ListenKey):
                self.listen_keys[record.listen_key] = record
            elif isinstance(record, Countdown):
                self.countdowns[(record.account_id, record.symbol)] = record
            elif isinstance(record, Counters):
                self.counters = record
        self.orders = dict(sorted(self.orders.items()))
        self.open = {i: o for i, o in self.orders.items() if o.is_open}
        for trades in self.trades.values():
            trades.sort(key=lambda t: t.id)
        for incomes in self.income.values():
            incomes.sort(key=lambda i: i.tran_id)

    @contextmanager
    def change(self) -> Iterator[Change]:
        """One atomic state change: committed to SQLite as a whole, then its events are published (still under the
        lock, so every account's events go out in the order the changes happened; `publish` must not block). On any
        error the in-memory state is reloaded from the last commit, so memory and disk never disagree."""
        with self.lock:
            change = Change()
            try:
                yield change
            except BaseException:
                if change.records or change.deleted:
                    self.load()
                raise
            if change.records or change.deleted:
                self.store.commit(list(change.records.values()), list(change.deleted.values()))
            for kind, key in change.records:
                if kind == Order.kind and not self.orders[int(key)].is_open:
                    self.open.pop(int(key), None)
            for account_id, event in change.events:
                self.publish(account_id, event)

    def close(self) -> None:
        self.store.close()

    def next_id(self, change: Change, name: str) -> int:
        value = getattr(self.counters, name)
        setattr(self.counters, name, value + 1)
        change.touch(self.counters)
        return value

    def rules(self, symbol: str) -> Rules:
        if symbol not in self._rules:
            try:
                inst = self.market.instrument(symbol)
            except (LookupError, ValueError, BinanceError):
                raise invalid_symbol() from None
            if inst is None:
                raise invalid_symbol()
            self._rules[symbol] = Rules.of(inst)
        return self._rules[symbol]

    def _price(self, kind: str, symbol: str, now: int) -> Decimal:
        """The market's mid or mark price, remembered for the current millisecond: one request values the same
        symbol many times, and the market's prices are pure functions of (symbol, time)."""
        with self.lock:
            if now != self._prices_at:
                self._prices_at, self._prices = now, {}
            key = (kind, symbol)
            if key not in self._prices:
                try:
                    source = self.market.mid_price if kind == "mid" else self.market.mark_price
                    self._prices[key] = source(symbol, now)
                except LookupError:  # not listed yet at `now`: nothing to trade against
                    raise invalid_symbol() from None
            return self._prices[key]

    def mid_price(self, symbol: str, now: int) -> Decimal:
        return self._price("mid", symbol, now)

    def mark_price(self, symbol: str, now: int) -> Decimal:
        return self._price("mark", symbol, now)

    def symbols(self) -> list[str]:
        instruments = self.market.instruments
        if isinstance(instruments, Mapping):
            return list(instruments)
        return [getattr(i, "symbol", i) for i in instruments]

    def account(self, account_id: str | None) -> AccountState:
        if account_id is None or account_id not in self.accounts:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return self.accounts[account_id]

    def position(self, account_id: str, symbol: str, side: str) -> Position:
        key = (account_id, symbol, side)
        if key not in self.positions:
            self.positions[key] = Position(account_id, symbol, side)
        return self.positions[key]

    def positions_of(self, account_id: str) -> list[Position]:
        return [p for (a, _, _), p in self.positions.items() if a == account_id]

    def open_orders(self, account_id: str, symbol: str | None = None) -> list[Order]:
        return [
            o
            for o in self.open.values()
            if o.is_open and o.account_id == account_id and (symbol is None or o.symbol == symbol)
        ]

    def add_income(
        self, change: Change, account_id: str, symbol: str, kind: str, amount: Decimal, now: int, trade_id: str = ""
    ) -> int:
        income = Income(self.next_id(change, "next_tran_id"), account_id, symbol, kind, amount, now, "", trade_id)
        self.income.setdefault(account_id, []).append(income)
        change.touch(income)
        return income.tran_id

    def account_event(
        self, reason: str, account: AccountState, positions: list[Position], balance_change: Decimal, now: int
    ) -> dict:
        isolated_total = sum(
            (p.isolated_wallet for p in self.positions_of(account.account_id) if account.isolated(p.symbol)), m.ZERO
        )
        views = []
        for p in positions:
            mark = self.mark_price(p.symbol, now)
            views.append((p, m.unrealized_pnl(p.amount, p.entry_price, mark), account.isolated(p.symbol)))
        return account_update(reason, account.wallet, account.wallet - isolated_total, balance_change, views, now)
