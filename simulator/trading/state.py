"""The simulated accounts' records and their SQLite persistence.

Every record is a small dataclass stored as one JSON row (Decimals as strings, so nothing is ever a float).
The engine gathers the records one state change touched and writes them in a single transaction, so a crash
leaves either the whole change or none of it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from simulator.trading.margin import ZERO

DEFAULT_LEVERAGE = 20
LISTEN_KEY_TTL_MS = 60 * 60 * 1000


@dataclass
class AccountState:
    kind: ClassVar[str] = "account"
    account_id: str
    wallet: Decimal
    dual_side: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)  # symbol -> CROSSED | ISOLATED (absent = CROSSED)
    funding_settled_ms: int = 0  # every funding event at or before this time has been applied
    update_time: int = 0

    @property
    def key(self) -> str:
        return self.account_id

    def leverage_for(self, symbol: str) -> int:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def isolated(self, symbol: str) -> bool:
        return self.margin_type.get(symbol, "CROSSED") == "ISOLATED"


@dataclass
class Position:
    kind: ClassVar[str] = "position"
    account_id: str
    symbol: str
    side: str  # BOTH | LONG | SHORT
    amount: Decimal = ZERO  # signed; SHORT positions in hedge mode are negative, as Binance shows them
    entry_price: Decimal = ZERO
    isolated_wallet: Decimal = ZERO
    realized: Decimal = ZERO  # accumulated realized PnL before fees ("cr" in ACCOUNT_UPDATE)
    update_time: int = 0

    @property
    def key(self) -> str:
        return f"{self.account_id}|{self.symbol}|{self.side}"


@dataclass
class Order:
    kind: ClassVar[str] = "order"
    order_id: int
    account_id: str
    symbol: str
    client_order_id: str
    side: str
    position_side: str
    type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    reduce_only: bool
    time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    price_match: str = "NONE"  # NONE | OPPONENT[_5|_10|_20] | QUEUE[_5|_10|_20]: the book set `price`

    @property
    def key(self) -> str:
        return str(self.order_id)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def avg_price(self) -> Decimal:
        return ZERO if self.executed_qty == 0 else self.cum_quote / self.executed_qty


@dataclass
class Trade:
    kind: ClassVar[str] = "trade"
    id: int
    account_id: str
    symbol: str
    order_id: int
    side: str
    position_side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int

    @property
    def key(self) -> str:
        return str(self.id)


@dataclass
class Income:
    kind: ClassVar[str] = "income"
    tran_id: int
    account_id: str
    symbol: str
    income_type: str  # TRANSFER | REALIZED_PNL | COMMISSION | FUNDING_FEE
    income: Decimal
    time: int
    info: str = ""
    trade_id: str = ""

    @property
    def key(self) -> str:
        return str(self.tran_id)


@dataclass
class ListenKey:
    kind: ClassVar[str] = "listen_key"
    listen_key: str
    account_id: str
    expires_ms: int

    @property
    def key(self) -> str:
        return self.listen_key


@dataclass
class Countdown:
    """An armed countdownCancelAll: the symbol's open orders are cancelled at `deadline_ms` unless re-armed."""

    kind: ClassVar[str] = "countdown"
    account_id: str
    symbol: str
    deadline_ms: int

    @property
    def key(self) -> str:
        return f"{self.account_id}|{self.symbol}"


@dataclass
class Counters:
    kind: ClassVar[str] = "counters"
    next_order_id: int = 1_000_000_001
    next_trade_id: int = 500_000_001
    next_tran_id: int = 9_000_000_001

    @property
    def key(self) -> str:
        return "counters"


Record = AccountState | Position | Order | Trade | Income | ListenKey | Countdown | Counters
RECORD_TYPES: dict[str, type] = {
    t.kind: t for t in (AccountState, Position, Order, Trade, Income, ListenKey, Countdown, Counters)
}


def _encode(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def to_json(record: Record) -> str:
    return json.dumps({f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)}, sort_keys=True)


@cache
def _decimal_fields(cls: type) -> frozenset[str]:
    return frozenset(name for name, hint in get_type_hints(cls).items() if hint is Decimal)


def from_json(kind: str, text: str) -> Record:
    cls = RECORD_TYPES[kind]
    decimal_fields = _decimal_fields(cls)
    raw = json.loads(text)
    return cls(**{k: Decimal(v) if k in decimal_fields else v for k, v in raw.items()})


class Store:
    """SQLite file `state_dir/trading.sqlite3`: one row per record, replaced whole on every change."""

    FILENAME = "trading.sqlite3"

    def __init__(self, state_dir: Path, fresh: bool = False) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / self.FILENAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (kind, key))"
        )
        if fresh:
            self._conn.execute("DELETE FROM records")

    def load(self) -> list[Record]:
        with self._lock:
            rows = self._conn.execute("SELECT kind, body FROM records").fetchall()
        return [from_json(kind, body) for kind, body in rows]

    def commit(self, upserts: Iterable[Record], deletes: Iterable[Record] = ()) -> None:
        """Write all changes of one state change atomically."""
        rows = [(r.kind, r.key, to_json(r)) for r in upserts]
        gone = [(r.kind, r.key) for r in deletes]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR REPLACE INTO records (kind, key, body) VALUES (?, ?, ?)", rows)
                self._conn.executemany("DELETE FROM records WHERE kind = ? AND key = ?", gone)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
