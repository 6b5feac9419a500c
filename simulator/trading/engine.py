"""The simulated exchange's accounts: orders, fills, positions, margin, funding and listen keys.

`Exchange` holds every account in memory, mirrors each state change to SQLite in one transaction (see state.py),
and publishes the user-data events of a change only after it is committed. Work that depends on time passing
(resting orders meeting the market, funding settlements, listen-key expiry) is done lazily whenever an account is
touched and from `on_tick`, which the server calls periodically; both settle "everything due up to now", so a
restart never skips or repeats a funding payment.

The model, where it simplifies Binance:
- Taker fills start at mid ± a per-symbol half spread of 1-3 ticks and walk up to three levels with square-root
  impact (margin.py); a crossing LIMIT takes only what fits within its price. Resting orders fill whole, as maker
  at their own price, once the market mid reaches it (checked when the account is touched and on every tick).
- Initial margin = notional / leverage (positions at mark, open orders at their price; in one-way mode orders that
  only close reserve nothing and the larger side counts). Available = cross wallet + cross uPnL - margins.
- Isolated positions hold their opening margin in `isolated_wallet`, released pro rata on reduction; realized PnL
  and fees go to the wallet. Funding goes to the wallet (and to the isolated wallet of an isolated position).
- The liquidation price is reported (margin.liquidation_price) but positions are never force-liquidated.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from lsq.config import Account
from simulator.clock import Clock
from simulator.errors import BinanceError, bad_param, invalid_symbol, mandatory_missing, unknown_order
from simulator.trading import margin as m
from simulator.trading.book import DEPTH_LIMITS, Level, book_side
from simulator.trading.events import account_update, order_trade_update
from simulator.trading.state import (
    LISTEN_KEY_TTL_MS,
    AccountState,
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
_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
PRICE_MATCHES = (
    "NONE",
    "OPPONENT",
    "OPPONENT_5",
    "OPPONENT_10",
    "OPPONENT_20",
    "QUEUE",
    "QUEUE_5",
    "QUEUE_10",
    "QUEUE_20",
)
MAX_BATCH_ORDERS = 5
# Binance's documented incomeType values; the simulator books TRANSFER, REALIZED_PNL, FUNDING_FEE and COMMISSION.
INCOME_TYPES = (
    "TRANSFER",
    "WELCOME_BONUS",
    "REALIZED_PNL",
    "FUNDING_FEE",
    "COMMISSION",
    "INSURANCE_CLEAR",
    "REFERRAL_KICKBACK",
    "COMMISSION_REBATE",
    "API_REBATE",
    "CONTEST_REWARD",
    "CROSS_COLLATERAL_TRANSFER",
    "OPTIONS_PREMIUM_FEE",
    "OPTIONS_SETTLE_PROFIT",
    "INTERNAL_TRANSFER",
    "AUTO_EXCHANGE",
    "DELIVERED_SETTELMENT",
    "COIN_SWAP_DEPOSIT",
    "COIN_SWAP_WITHDRAW",
    "POSITION_LIMIT_INCREASE_FEE",
    "STRATEGY_UMFUTURES_TRANSFER",
    "FEE_RETURN",
    "BFUSD_REWARD",
)
FUNDING_PAGE = 1000
FUNDING_LOOKAHEAD_MS = 24 * 3600 * 1000


class MarketModel(Protocol):
    """What the engine needs from simulator.market.Market."""

    def instrument(self, symbol: str) -> Any: ...
    def mid_price(self, symbol: str, now_ms: int) -> Decimal: ...
    def mark_price(self, symbol: str, now_ms: int) -> Decimal: ...
    def funding_times(self, symbol: str, start_ms: int, end_ms: int) -> list[int]: ...  # [start, end)
    def funding_rates(self, symbol: str, start_ms: int, end_ms: int, limit: int, *, now_ms: int) -> list[dict]: ...


@dataclass(frozen=True)
class Rules:
    """One symbol's trading filters, as Decimals."""

    symbol: str
    tick: Decimal
    min_price: Decimal
    max_price: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    percent_up: Decimal
    percent_down: Decimal
    maint_rate: Decimal
    price_precision: int
    qty_precision: int
    max_num_orders: int

    @classmethod
    def of(cls, inst: Any) -> Rules:
        def d(name: str) -> Decimal:
            return Decimal(str(getattr(inst, name)))

        return cls(
            symbol=inst.symbol,
            tick=d("tick_size"),
            min_price=d("min_price"),
            max_price=d("max_price"),
            step=d("step_size"),
            min_qty=d("min_qty"),
            max_qty=d("max_qty"),
            market_step=d("market_step_size"),
            market_min_qty=d("market_min_qty"),
            market_max_qty=d("market_max_qty"),
            min_notional=d("min_notional"),
            percent_up=d("percent_price_up"),
            percent_down=d("percent_price_down"),
            maint_rate=d("maint_margin_percent") / 100,
            price_precision=int(inst.price_precision),
            qty_precision=int(inst.quantity_precision),
            max_num_orders=int(inst.max_num_orders),
        )


@dataclass
class PositionView:
    """A position valued at the mark price."""

    position: Position
    mark: Decimal
    leverage: int
    isolated: bool
    notional: Decimal
    upnl: Decimal
    initial_margin: Decimal
    maint_margin: Decimal
    open_order_margin: Decimal
    liquidation_price: Decimal = m.ZERO


@dataclass
class Valuation:
    """An account valued at the mark price: what /account, /balance and /positionRisk report."""

    wallet: Decimal
    cross_wallet: Decimal
    cross_upnl: Decimal
    total_upnl: Decimal
    position_margin: Decimal
    order_margin: Decimal
    maint_margin: Decimal
    available: Decimal
    positions: list[PositionView]
    order_margin_by_symbol: dict[str, Decimal]


@dataclass
class _Change:
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


def order_margin(
    orders: list[Order], position_amounts: Mapping[str, Decimal], dual_side: bool, leverage: int
) -> Decimal:
    """Initial margin reserved by one symbol's open orders.

    One-way mode: orders that would only close the position reserve nothing; of the rest, the larger side counts
    (a buy and a sell cannot both fill into new exposure). Hedge mode: every opening order (BUY LONG, SELL SHORT)."""
    if dual_side:
        opening = [o for o in orders if (o.side, o.position_side) in (("BUY", "LONG"), ("SELL", "SHORT"))]
        return sum((o.remaining * o.price for o in opening), m.ZERO) / leverage
    amount = position_amounts.get("BOTH", m.ZERO)
    sides = []
    for side, covered in (("BUY", max(m.ZERO, -amount)), ("SELL", max(m.ZERO, amount))):
        mine = [o for o in orders if o.side == side and not o.reduce_only]
        qty = sum((o.remaining for o in mine), m.ZERO)
        if qty <= covered or qty == 0:
            sides.append(m.ZERO)
            continue
        notional = sum((o.remaining * o.price for o in mine), m.ZERO)
        sides.append(notional * (qty - covered) / qty)
    return max(sides) / leverage


def _parse_decimal(params: Mapping[str, str], name: str) -> Decimal:
    text = params.get(name)
    if text is None or text == "":
        raise mandatory_missing(name)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise bad_param(name, text) from None
    if not value.is_finite():
        raise bad_param(name, text)
    return value


def _parse_int(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise bad_param(name, text) from None


def _parse_bool(params: Mapping[str, str], name: str) -> bool | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if text.lower() not in ("true", "false"):
        raise bad_param(name, text)
    return text.lower() == "true"


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], code: int, what: str) -> str:
    value = params.get(name)
    if not value:
        raise mandatory_missing(name)
    if value not in allowed:
        raise BinanceError(code, f"Invalid {what}.")
    return value


def parse_batch(params: Mapping[str, str]) -> list[dict[str, str]]:
    """The `batchOrders` parameter: a JSON list of at most 5 order objects, their values as strings."""
    text = params.get("batchOrders")
    if not text:
        raise mandatory_missing("batchOrders")
    try:
        orders = json.loads(text)
    except ValueError:
        raise BinanceError(-1130, "Data sent for parameter 'batchOrders' is not valid: not a JSON list.") from None
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders) or not orders:
        raise BinanceError(-1130, "Data sent for parameter 'batchOrders' is not valid: a list of order objects.")
    if len(orders) > MAX_BATCH_ORDERS:
        raise BinanceError(
            -1130, f"Data sent for parameter 'batchOrders' is not valid: at most {MAX_BATCH_ORDERS} orders."
        )
    return [{k: _as_param(v) for k, v in o.items()} for o in orders]


def _as_param(value: object) -> str:
    """A JSON value as the string a form parameter would carry (booleans as Binance's "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _time_range(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    """startTime and endTime; a range that ends before it starts is refused, not answered with an empty list."""
    start, end = _parse_int(params, "startTime"), _parse_int(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(-1130, f"Data sent for parameter 'startTime' is not valid: {start} is after endTime {end}.")
    return start, end


def _limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    limit = _parse_int(params, "limit", default)
    assert limit is not None
    if not 1 <= limit <= maximum:
        raise BinanceError(-1130, f"Data sent for parameter 'limit' is not valid: must be 1..{maximum}.")
    return limit


class Exchange:
    """All simulated accounts. Thread-safe: every public method runs under one lock."""

    def __init__(
        self,
        market: MarketModel,
        clock: Clock,
        state_dir: Path,
        accounts: list[Account],
        publish: Publish,
        fresh: bool = False,
    ) -> None:
        """Restore the accounts stored under `state_dir` (all of them, unless `fresh`), and open the configured
        accounts not stored yet with their starting balance. A stored account keeps its own balance."""
        self.market = market
        self.clock = clock
        self.publish = publish
        self.store = Store(Path(state_dir), fresh=fresh)
        self._lock = threading.RLock()
        self._rules: dict[str, Rules] = {}
        self._next_funding: dict[str, tuple[int, int]] = {}
        # countdownCancelAll deadlines per (account, symbol), in server ms. Kept in memory: a restarted simulator
        # has dropped every client's connection anyway, and the clients re-arm their switch with their next beat.
        self._countdowns: dict[tuple[str, str], int] = {}
        self._prices_at = -1
        self._prices: dict[tuple[str, str], Decimal] = {}
        self._keys = {
            a.api_key.get_secret_value(): (a.account_id, a.api_secret.get_secret_value())
            for a in accounts
            if a.has_credentials and a.api_key is not None and a.api_secret is not None
        }
        self._load()
        now = clock.now_ms()
        with self._change() as change:
            for account in accounts:
                if account.account_id not in self.accounts:
                    self._open_account(change, account, now)

    # ----- loading and transactions -------------------------------------------------------------------------------

    def _load(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.positions: dict[tuple[str, str, str], Position] = {}
        self.orders: dict[int, Order] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.income: dict[str, list[Income]] = {}
        self.listen_keys: dict[str, ListenKey] = {}
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
            elif isinstance(record, Counters):
                self.counters = record
        self.orders = dict(sorted(self.orders.items()))
        self._open = {i: o for i, o in self.orders.items() if o.is_open}
        for trades in self.trades.values():
            trades.sort(key=lambda t: t.id)
        for incomes in self.income.values():
            incomes.sort(key=lambda i: i.tran_id)

    @contextmanager
    def _change(self) -> Iterator[_Change]:
        """One atomic state change: committed to SQLite as a whole, then its events are published (still under the
        lock, so every account's events go out in the order the changes happened; `publish` must not block). On any
        error the in-memory state is reloaded from the last commit, so memory and disk never disagree."""
        with self._lock:
            change = _Change()
            try:
                yield change
            except BaseException:
                if change.records or change.deleted:
                    self._load()
                raise
            if change.records or change.deleted:
                self.store.commit(list(change.records.values()), list(change.deleted.values()))
            for kind, key in change.records:
                if kind == Order.kind and not self.orders[int(key)].is_open:
                    self._open.pop(int(key), None)
            for account_id, event in change.events:
                self.publish(account_id, event)

    def close(self) -> None:
        self.store.close()

    # ----- ids and lookups ----------------------------------------------------------------------------------------

    def _next_id(self, change: _Change, name: str) -> int:
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
        with self._lock:
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

    def _account(self, account_id: str | None) -> AccountState:
        if account_id is None or account_id not in self.accounts:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return self.accounts[account_id]

    def _position(self, account_id: str, symbol: str, side: str) -> Position:
        key = (account_id, symbol, side)
        if key not in self.positions:
            self.positions[key] = Position(account_id, symbol, side)
        return self.positions[key]

    def _positions_of(self, account_id: str) -> list[Position]:
        return [p for (a, _, _), p in self.positions.items() if a == account_id]

    def _open_orders(self, account_id: str, symbol: str | None = None) -> list[Order]:
        return [
            o
            for o in self._open.values()
            if o.is_open and o.account_id == account_id and (symbol is None or o.symbol == symbol)
        ]

    def _add_income(
        self, change: _Change, account_id: str, symbol: str, kind: str, amount: Decimal, now: int, trade_id: str = ""
    ) -> int:
        income = Income(self._next_id(change, "next_tran_id"), account_id, symbol, kind, amount, now, "", trade_id)
        self.income.setdefault(account_id, []).append(income)
        change.touch(income)
        return income.tran_id

    def _open_account(self, change: _Change, account: Account, now: int) -> None:
        balance = m.money(Decimal(str(account.starting_balance_usdt)))
        state = AccountState(account.account_id, balance, funding_settled_ms=now, update_time=now)
        self.accounts[state.account_id] = state
        change.touch(state)
        if balance:
            self._add_income(change, state.account_id, "", "TRANSFER", balance, now)

    def transfer(self, account_id: str, kind: str, amount: Decimal, now: int) -> dict:
        """Move USDT into (DEPOSIT) or out of (WITHDRAW) the futures wallet, as a transfer from the spot wallet does
        on Binance: a TRANSFER income record, the wallet changed, and ACCOUNT_UPDATE with reason DEPOSIT/WITHDRAW.
        A withdrawal is limited to the account's maxWithdrawAmount. Raises ValueError naming the problem."""
        if account_id not in self.accounts:
            raise ValueError(f"unknown account {account_id!r}; known: {sorted(self.accounts)}")
        if kind not in ("DEPOSIT", "WITHDRAW"):
            raise ValueError(f"type must be DEPOSIT or WITHDRAW, got {kind!r}")
        if not amount.is_finite() or amount <= 0 or amount != m.money(amount):
            raise ValueError(f"amount must be a positive USDT amount with at most 8 decimals, got {amount}")
        self._caught_up(account_id, now)
        with self._change() as change:
            account = self.accounts[account_id]
            if kind == "WITHDRAW":
                v = self.valuation(account_id, now)
                allowed = m.money(max(m.ZERO, min(v.available, v.cross_wallet)))
                if amount > allowed:
                    raise ValueError(f"cannot withdraw {m.fmt(amount)} USDT: at most {m.fmt(allowed)} is withdrawable")
            signed = amount if kind == "DEPOSIT" else -amount
            account.wallet += signed
            account.update_time = now
            change.touch(account)
            tran_id = self._add_income(change, account_id, "", "TRANSFER", signed, now)
            change.emit(account_id, self._account_event(kind, account, [], signed, now))
        return {
            "account": account_id,
            "type": kind,
            "amount": m.fmt(amount),
            "tranId": tran_id,
            "walletBalance": m.fmt(account.wallet),
            "time": now,
        }

    # ----- API keys and listen keys -------------------------------------------------------------------------------

    def secret_for_api_key(self, api_key: str) -> tuple[str, str] | None:
        return self._keys.get(api_key)

    def account_for_listen_key(self, key: str, now_ms: int) -> str | None:
        with self._lock:
            found = self.listen_keys.get(key)
            return found.account_id if found is not None and found.expires_ms > now_ms else None

    def new_listen_key(self, account_id: str, now: int) -> str:
        """POST /listenKey: the account's live key extended, or a new one (as Binance, one key per account)."""
        self._account(account_id)
        with self._change() as change:
            live = [k for k in self.listen_keys.values() if k.account_id == account_id and k.expires_ms > now]
            key = live[0] if live else ListenKey(secrets.token_urlsafe(48)[:64], account_id, 0)
            key.expires_ms = now + LISTEN_KEY_TTL_MS
            self.listen_keys[key.listen_key] = key
            change.touch(key)
            return key.listen_key

    def _own_listen_key(self, account_id: str, key: str | None, now: int) -> ListenKey:
        if key:
            found = self.listen_keys.get(key)
            if found is None or found.account_id != account_id or found.expires_ms <= now:
                raise BinanceError(-1125, "This listenKey does not exist.")
            return found
        live = [k for k in self.listen_keys.values() if k.account_id == account_id and k.expires_ms > now]
        if not live:
            raise BinanceError(-1125, "This listenKey does not exist.")
        return live[0]

    def keepalive_listen_key(self, account_id: str, key: str | None, now: int) -> str:
        with self._change() as change:
            found = self._own_listen_key(account_id, key, now)
            found.expires_ms = now + LISTEN_KEY_TTL_MS
            change.touch(found)
            return found.listen_key

    def close_listen_key(self, account_id: str, key: str | None, now: int) -> None:
        with self._change() as change:
            found = self._own_listen_key(account_id, key, now)
            del self.listen_keys[found.listen_key]
            change.delete(found)

    def _expire_listen_keys(self, change: _Change, now: int) -> None:
        for key in [k for k in self.listen_keys.values() if k.expires_ms <= now]:
            del self.listen_keys[key.listen_key]
            change.delete(key)
            change.emit(key.account_id, {"e": "listenKeyExpired", "E": now, "listenKey": key.listen_key})

    # ----- time passing: funding and resting orders ---------------------------------------------------------------

    def on_tick(self, now_ms: int) -> None:
        """Settle everything due up to `now_ms` for every account; the server calls this periodically."""
        with self._change() as change:
            for account in self.accounts.values():
                self._catch_up(change, account, now_ms)
            self._expire_listen_keys(change, now_ms)

    def _catch_up(self, change: _Change, account: AccountState, now: int) -> None:
        self._fire_countdowns(change, account, now)
        self._settle_funding(change, account, now)
        self._match_resting(change, account, now)

    def _caught_up(self, account_id: str | None, now: int) -> AccountState:
        """The account, after committing what became due (its own transaction, so a rejected request that
        follows never rolls it back)."""
        account = self._account(account_id)
        with self._change() as change:
            self._catch_up(change, account, now)
        return account

    def _funding_due(self, symbol: str, after: int, now: int) -> bool:
        """Whether a funding time of `symbol` lies in (after, now]. Remembers, per symbol, the first funding time
        after the last time looked at, so the many requests between two funding times skip the market."""
        looked_at, upcoming = self._next_funding.get(symbol, (None, None))
        if looked_at is not None and upcoming is not None and after >= looked_at and upcoming > now:
            return False
        due = bool(self.market.funding_times(symbol, after + 1, now + 1))
        ahead = self.market.funding_times(symbol, now + 1, now + FUNDING_LOOKAHEAD_MS)
        self._next_funding[symbol] = (now, ahead[0] if ahead else now + FUNDING_LOOKAHEAD_MS)
        return due

    def _settle_funding(self, change: _Change, account: AccountState, now: int) -> None:
        """Apply every funding event in (funding_settled_ms, now] to the positions held, exactly once.

        Positions only change inside a change that also writes the account (with this watermark), so after a
        restart re-settling from the stored watermark pays exactly the events not yet paid."""
        start = account.funding_settled_ms
        if now <= start:
            return
        held: dict[str, list[Position]] = {}
        for p in self._positions_of(account.account_id):
            if p.amount != 0:
                held.setdefault(p.symbol, []).append(p)
        for symbol in sorted(held):
            if not self._funding_due(symbol, start, now):
                continue
            for event in self._funding_events(symbol, start, now):
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
                    self._add_income(change, account.account_id, symbol, "FUNDING_FEE", pay, when)
                if touched:
                    account.update_time = when
                    change.touch(account, *touched)
                    change.emit(account.account_id, self._account_event("FUNDING_FEE", account, touched, total, now))
        account.funding_settled_ms = now

    def _funding_events(self, symbol: str, start: int, now: int) -> list[dict]:
        events: list[dict] = []
        cursor = start + 1
        while cursor <= now:
            page = self.market.funding_rates(symbol, cursor, now, FUNDING_PAGE, now_ms=now)
            page = [e for e in page if cursor <= int(e["fundingTime"]) <= now]
            events += page
            if len(page) < FUNDING_PAGE:
                break
            cursor = int(page[-1]["fundingTime"]) + 1
        return sorted(events, key=lambda e: int(e["fundingTime"]))

    def _match_resting(self, change: _Change, account: AccountState, now: int) -> None:
        """Fill (as maker, at their price) the resting LIMIT orders the market mid has reached."""
        mids: dict[str, Decimal] = {}
        for order in self._open_orders(account.account_id):
            if order.symbol not in mids:
                mids[order.symbol] = self.mid_price(order.symbol, now)
            mid = mids[order.symbol]
            if (order.side == "BUY" and mid <= order.price) or (order.side == "SELL" and mid >= order.price):
                qty = self._fillable(account, order, order.remaining)
                if qty > 0:
                    self._fill(change, account, order, [(qty, order.price)], maker=True, now=now)
                if order.is_open:
                    self._finish(change, order, "EXPIRED", now)

    # ----- fills --------------------------------------------------------------------------------------------------

    @staticmethod
    def _only_reduces(order: Order) -> bool:
        """Reduce-only orders, and in hedge mode every closing order (SELL LONG, BUY SHORT)."""
        return order.reduce_only or (order.side, order.position_side) in (("SELL", "LONG"), ("BUY", "SHORT"))

    def _fillable(self, account: AccountState, order: Order, qty: Decimal) -> Decimal:
        """Orders that only reduce never fill beyond the position they close (Binance trims or expires them)."""
        if not self._only_reduces(order):
            return qty
        amount = self._position(account.account_id, order.symbol, order.position_side).amount
        if amount == 0 or (amount > 0) == (order.side == "BUY"):
            return m.ZERO
        return min(qty, abs(amount))

    def _finish(self, change: _Change, order: Order, status: str, now: int) -> None:
        order.status = status
        order.update_time = now
        change.touch(order)
        change.emit(order.account_id, order_trade_update(order, status, now))

    def _fill(
        self,
        change: _Change,
        account: AccountState,
        order: Order,
        fills: list[tuple[Decimal, Decimal]],
        maker: bool,
        now: int,
    ) -> None:
        """Book fills of `order`: position, wallet, trades, income, and their events."""
        leverage = account.leverage_for(order.symbol)
        isolated = account.isolated(order.symbol)
        pos = self._position(account.account_id, order.symbol, order.position_side)
        balance_change = m.ZERO
        for qty, price in fills:
            old = pos.amount
            effect = m.apply_fill(pos.amount, pos.entry_price, order.side, qty, price)
            fee = m.commission(qty, price, maker)
            if isolated:
                closed = min(abs(old), qty) if old != 0 and (old > 0) != (order.side == "BUY") else m.ZERO
                released = pos.isolated_wallet * closed / abs(old) if closed else m.ZERO
                opened = qty - closed
                pos.isolated_wallet = m.money(pos.isolated_wallet - released + opened * price / leverage)
                if effect.amount == 0:
                    pos.isolated_wallet = m.ZERO
            pos.amount, pos.entry_price = effect.amount, effect.entry_price
            pos.realized += effect.realized_pnl
            pos.update_time = now
            account.wallet += effect.realized_pnl - fee
            account.update_time = now
            balance_change += effect.realized_pnl - fee
            order.executed_qty += qty
            order.cum_quote += qty * price
            order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
            order.update_time = now
            trade = Trade(
                self._next_id(change, "next_trade_id"),
                account.account_id,
                order.symbol,
                order.order_id,
                order.side,
                order.position_side,
                price,
                qty,
                qty * price,
                fee,
                effect.realized_pnl,
                maker,
                now,
            )
            self.trades.setdefault(account.account_id, []).append(trade)
            if effect.realized_pnl:
                self._add_income(
                    change, account.account_id, order.symbol, "REALIZED_PNL", effect.realized_pnl, now, str(trade.id)
                )
            if fee:
                self._add_income(change, account.account_id, order.symbol, "COMMISSION", -fee, now, str(trade.id))
            change.touch(trade)
            change.emit(account.account_id, order_trade_update(order, "TRADE", now, trade))
        change.touch(account, pos, order)
        change.emit(account.account_id, self._account_event("ORDER", account, [pos], balance_change, now))

    def _account_event(
        self, reason: str, account: AccountState, positions: list[Position], balance_change: Decimal, now: int
    ) -> dict:
        isolated_total = sum(
            (p.isolated_wallet for p in self._positions_of(account.account_id) if account.isolated(p.symbol)), m.ZERO
        )
        views = []
        for p in positions:
            mark = self.mark_price(p.symbol, now)
            views.append((p, m.unrealized_pnl(p.amount, p.entry_price, mark), account.isolated(p.symbol)))
        return account_update(reason, account.wallet, account.wallet - isolated_total, balance_change, views, now)

    # ----- valuation ----------------------------------------------------------------------------------------------

    def valuation(self, account_id: str, now: int) -> Valuation:
        """Value the account at mark prices (no state change)."""
        account = self._account(account_id)
        open_orders = self._open_orders(account_id)
        symbols = {p.symbol for p in self._positions_of(account_id) if p.amount != 0} | {o.symbol for o in open_orders}
        marks = {s: self.mark_price(s, now) for s in sorted(symbols)}
        amounts: dict[str, dict[str, Decimal]] = {}
        for p in self._positions_of(account_id):
            amounts.setdefault(p.symbol, {})[p.side] = p.amount
        order_margins = {
            s: order_margin(
                [o for o in open_orders if o.symbol == s],
                amounts.get(s, {}),
                account.dual_side,
                account.leverage_for(s),
            )
            for s in sorted({o.symbol for o in open_orders})
        }
        views: list[PositionView] = []
        for p in self._positions_of(account_id):
            if p.amount == 0:
                continue
            mark = marks[p.symbol]
            leverage = account.leverage_for(p.symbol)
            notional = p.amount * mark
            views.append(
                PositionView(
                    position=p,
                    mark=mark,
                    leverage=leverage,
                    isolated=account.isolated(p.symbol),
                    notional=notional,
                    upnl=m.unrealized_pnl(p.amount, p.entry_price, mark),
                    initial_margin=m.initial_margin(notional, leverage),
                    maint_margin=m.maint_margin(notional, self.rules(p.symbol).maint_rate),
                    open_order_margin=order_margins.get(p.symbol, m.ZERO),
                )
            )
        isolated_wallet = sum((v.position.isolated_wallet for v in views if v.isolated), m.ZERO)
        cross = [v for v in views if not v.isolated]
        cross_wallet = account.wallet - isolated_wallet
        cross_upnl = sum((v.upnl for v in cross), m.ZERO)
        cross_im = sum((v.initial_margin for v in cross), m.ZERO)
        orders_im = sum(order_margins.values(), m.ZERO)
        for v in views:
            others = [o for o in cross if o is not v]
            backing = (
                v.position.isolated_wallet
                if v.isolated
                else cross_wallet + sum((o.upnl - o.maint_margin for o in others), m.ZERO)
            )
            v.liquidation_price = m.liquidation_price(
                v.position.amount,
                v.position.entry_price,
                backing,
                self.rules(v.position.symbol).maint_rate,
                self.rules(v.position.symbol).tick,
            )
        return Valuation(
            wallet=account.wallet,
            cross_wallet=cross_wallet,
            cross_upnl=cross_upnl,
            total_upnl=sum((v.upnl for v in views), m.ZERO),
            position_margin=sum((v.initial_margin for v in views), m.ZERO),
            order_margin=orders_im,
            maint_margin=sum((v.maint_margin for v in views), m.ZERO),
            available=cross_wallet + cross_upnl - cross_im - orders_im,
            positions=views,
            order_margin_by_symbol=order_margins,
        )

    def _margin_needed(
        self,
        account: AccountState,
        symbol: str,
        side: str,
        position_side: str,
        qty: Decimal,
        price: Decimal,
        is_market: bool,
        reduce_only: bool,
        now: int,
    ) -> Decimal:
        """Extra initial margin the new order takes: the symbol's position+order margin after minus before."""
        leverage = account.leverage_for(symbol)
        mark = self.mark_price(symbol, now)
        amounts = {p.side: p.amount for p in self._positions_of(account.account_id) if p.symbol == symbol}
        orders = self._open_orders(account.account_id, symbol)

        def required(amounts: Mapping[str, Decimal], orders: list[Order]) -> Decimal:
            pos_im = sum((m.initial_margin(a * mark, leverage) for a in amounts.values()), m.ZERO)
            return pos_im + order_margin(orders, amounts, account.dual_side, leverage)

        before = required(amounts, orders)
        if is_market:
            after_amounts = dict(amounts)
            after_amounts[position_side] = after_amounts.get(position_side, m.ZERO) + m.sign(side) * qty
            after = required(after_amounts, orders)
        else:
            probe = Order(
                0, account.account_id, symbol, "", side, position_side, "LIMIT", "GTC", qty, price, reduce_only, now
            )
            after = required(amounts, [*orders, probe])
        return after - before

    # ----- contract settings --------------------------------------------------------------------------------------

    def change_leverage(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        account = self._account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        leverage = _parse_int(params, "leverage")
        if leverage is None:
            raise mandatory_missing("leverage")
        if not 1 <= leverage <= 125:
            raise BinanceError(-4028, f"Leverage {leverage} is not valid")
        self._caught_up(account_id, now)
        with self._change() as change:
            held = sum(
                (abs(p.amount) for p in self._positions_of(account_id) if p.symbol == symbol), m.ZERO
            ) * self.mark_price(symbol, now)
            if held > m.max_notional(leverage):
                raise BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
            account.leverage[symbol] = leverage
            account.update_time = now
            change.touch(account)
            change.emit(
                account_id, {"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, "ac": {"s": symbol, "l": leverage}}
            )
        return {"leverage": leverage, "maxNotionalValue": m.fmt(m.max_notional(leverage)), "symbol": symbol}

    def change_margin_type(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        account = self._account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        wanted = (params.get("marginType") or "").upper()
        if not wanted:
            raise mandatory_missing("marginType")
        wanted = {"CROSS": "CROSSED"}.get(wanted, wanted)
        if wanted not in ("CROSSED", "ISOLATED"):
            raise BinanceError(-1130, "Data sent for parameter 'marginType' is not valid.")
        self._caught_up(account_id, now)
        with self._change() as change:
            if (account.isolated(symbol) and wanted == "ISOLATED") or (
                not account.isolated(symbol) and wanted == "CROSSED"
            ):
                raise BinanceError(-4046, "No need to change margin type.")
            if self._open_orders(account_id, symbol):
                raise BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")
            if any(p.amount != 0 for p in self._positions_of(account_id) if p.symbol == symbol):
                raise BinanceError(-4048, "Margin type cannot be changed if there exists position.")
            account.margin_type[symbol] = wanted
            account.update_time = now
            change.touch(account)
            change.emit(account_id, self._account_event("MARGIN_TYPE_CHANGE", account, [], m.ZERO, now))
        return {"code": 200, "msg": "success"}

    def change_position_mode(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        account = self._account(account_id)
        wanted = _parse_bool(params, "dualSidePosition")
        if wanted is None:
            raise mandatory_missing("dualSidePosition")
        self._caught_up(account_id, now)
        with self._change() as change:
            if wanted == account.dual_side:
                raise BinanceError(-4059, "No need to change position side.")
            if self._open_orders(account_id):
                raise BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
            if any(p.amount != 0 for p in self._positions_of(account_id)):
                raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
            account.dual_side = wanted
            account.update_time = now
            change.touch(account)
        return {"code": 200, "msg": "success"}

    def position_mode(self, account_id: str) -> dict:
        return {"dualSidePosition": self._account(account_id).dual_side}

    # ----- orders -------------------------------------------------------------------------------------------------

    def place_order(self, account_id: str, params: Mapping[str, str], now: int, *, test: bool = False) -> dict:
        """POST /fapi/v1/order: validate exactly as Binance, then fill, rest or expire. With `test`
        (POST /fapi/v1/order/test) every check runs and nothing is placed."""
        account = self._account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        rules = self.rules(symbol)
        side = _choice(params, "side", ("BUY", "SELL"), -1117, "side")
        order_type = _choice(params, "type", ("MARKET", "LIMIT"), -1116, "orderType")
        qty = _parse_decimal(params, "quantity")
        is_market = order_type == "MARKET"
        price_match = params.get("priceMatch") or "NONE"
        if price_match not in PRICE_MATCHES:
            raise bad_param("priceMatch", price_match)
        if is_market:
            if params.get("price"):
                raise BinanceError(-1106, "Parameter 'price' sent when not required.")
            if price_match != "NONE":
                raise BinanceError(-1106, "Parameter 'priceMatch' sent when not required.")
            tif = "GTC"
            price = m.ZERO
        else:
            tif = _choice(params, "timeInForce", ("GTC", "IOC", "FOK", "GTX"), -1115, "timeInForce")
            if price_match != "NONE":
                if params.get("price"):
                    raise BinanceError(-1106, "Parameter 'price' sent when not required (priceMatch sets it).")
                price = m.ZERO
            else:
                price = _parse_decimal(params, "price")
        position_side = params.get("positionSide") or "BOTH"
        if position_side not in ("BOTH", "LONG", "SHORT"):
            raise bad_param("positionSide", position_side)
        if (position_side == "BOTH") == account.dual_side:
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        reduce_only = _parse_bool(params, "reduceOnly")
        if reduce_only is not None and account.dual_side:
            raise BinanceError(-1106, "Parameter 'reduceonly' sent when not required.")
        reduce_only = bool(reduce_only)
        client_id = params.get("newClientOrderId") or secrets.token_hex(11)
        if not _CLIENT_ID.match(client_id):
            raise BinanceError(-4015, "Client order id length should not be more than 36 chars")
        if any(o.client_order_id == client_id for o in self._open_orders(account_id)):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        if order_type == "LIMIT" and len(self._open_orders(account_id, symbol)) >= rules.max_num_orders:
            raise BinanceError(-2025, "Reach max open order limit.")
        resp_type = params.get("newOrderRespType") or "ACK"
        if resp_type not in ("ACK", "RESULT"):
            raise bad_param("newOrderRespType", resp_type)

        if price_match == "NONE":
            self._check_filters(rules, qty, price, is_market)
        self._caught_up(account_id, now)
        with self._change() as change:
            mid = self.mid_price(symbol, now)
            mark = self.mark_price(symbol, now)
            spread = m.half_spread_ticks(symbol)
            if price_match != "NONE":
                price = self._matched_price(rules, side, price_match, mid, spread)
                self._check_filters(rules, qty, price, is_market)
            if is_market:
                best = m.best_quote(side, mid, rules.tick, spread)
                if (side == "BUY" and best > mark * rules.percent_up) or (
                    side == "SELL" and best < mark * rules.percent_down
                ):
                    raise BinanceError(
                        -4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit."
                    )
            else:
                if price > mark * rules.percent_up:
                    raise BinanceError(-4016, f"Limit price can't be higher than {m.fmt(mark * rules.percent_up)}.")
                if price < mark * rules.percent_down:
                    raise BinanceError(-4024, f"Limit price can't be lower than {m.fmt(mark * rules.percent_down)}.")
            reference = mid if is_market else price
            if qty * reference < rules.min_notional and not reduce_only:
                raise BinanceError(
                    -4164,
                    f"Order's notional must be no smaller than {m.fmt(rules.min_notional)} "
                    "(unless you choose reduce only).",
                )
            amount = self._position(account_id, symbol, position_side).amount
            closing = amount != 0 and (amount > 0) != (side == "BUY")
            if reduce_only and not closing:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            if account.dual_side and position_side != ("LONG" if side == "BUY" else "SHORT") and qty > abs(amount):
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            after = abs(amount + m.sign(side) * qty) if not reduce_only else abs(amount)
            if after * mark > m.max_notional(account.leverage_for(symbol)):
                raise BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
            # A LIMIT crosses when the book shows liquidity at its price (book.py): the same inversion that sizes
            # what it takes, so a post-only order is refused exactly when it would have taken something.
            crossing = is_market or m.quantity_within(side, mid, rules.tick, spread, price, rules.step) > 0
            if tif == "GTX" and crossing:
                raise BinanceError(
                    -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
                )
            needed = self._margin_needed(
                account, symbol, side, position_side, qty, reference, is_market, reduce_only, now
            )
            if needed > 0 and needed > self.valuation(account_id, now).available:
                raise BinanceError(-2019, "Margin is insufficient.")
            if test:
                return {}

            order = Order(
                self._next_id(change, "next_order_id"),
                account_id,
                symbol,
                client_id,
                side,
                position_side,
                order_type,
                tif,
                qty,
                price,
                reduce_only,
                now,
                update_time=now,
                price_match=price_match,
            )
            self.orders[order.order_id] = self._open[order.order_id] = order
            change.touch(order)
            ack = self.order_view(order)
            change.emit(account_id, order_trade_update(order, "NEW", now))
            if crossing:
                self._take(change, account, order, mid, spread, now)
        return ack if resp_type == "ACK" else self.order_view(order)

    def _matched_price(self, rules: Rules, side: str, price_match: str, mid: Decimal, spread: int) -> Decimal:
        """The price `priceMatch` picks from the book: OPPONENT[_N] the N-th level across, QUEUE[_N] on our side."""
        name, _, nth = price_match.partition("_")
        level = int(nth or 1)
        # A buyer's opponents are the asks, which a BUY taker meets; its queue is the bids, which a SELL taker meets.
        taker_side = side if name == "OPPONENT" else ("SELL" if side == "BUY" else "BUY")
        levels = book_side(taker_side, mid, rules.tick, spread, rules.step, level)
        if not levels:
            raise BinanceError(-5021, "Due to the order could not be filled immediately, the order is rejected.")
        return levels[-1][0]

    def batch_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        """POST /fapi/v1/batchOrders: each order placed as POST /fapi/v1/order would, answered in order with the
        order or its error; one bad order does not stop the others."""
        orders = parse_batch(params)
        answers: list[dict] = []
        for item in orders:
            try:
                answers.append(self.place_order(account_id, item, now))
            except BinanceError as exc:
                answers.append(exc.body())
        return answers

    def _check_filters(self, rules: Rules, qty: Decimal, price: Decimal, is_market: bool) -> None:
        """PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE and precision checks, with Binance's codes."""
        if qty <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if m.decimals(qty) > rules.qty_precision:
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if not is_market:
            if price <= 0:
                raise BinanceError(-4001, "Price less than 0.")
            if m.decimals(price) > rules.price_precision:
                raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
            if price < rules.min_price:
                raise BinanceError(-4013, "Price less than min price.")
            if price > rules.max_price:
                raise BinanceError(-4002, "Price greater than max price.")
            if not m.on_grid(price, rules.tick):
                raise BinanceError(-4014, "Price not increased by tick size.")
        step, low, high = (
            (rules.market_step, rules.market_min_qty, rules.market_max_qty)
            if is_market
            else (rules.step, rules.min_qty, rules.max_qty)
        )
        if qty < low:
            raise BinanceError(-4004, "Quantity less than min quantity.")
        if qty > high:
            raise BinanceError(-4005, "Quantity greater than max quantity.")
        if not m.on_grid(qty - low, step):
            raise BinanceError(-4023, "Quantity not increased by step size.")

    def _take(self, change: _Change, account: AccountState, order: Order, mid: Decimal, spread: int, now: int) -> None:
        """Execute a crossing order as taker: MARKET walks a few price levels; LIMIT takes the levels within its
        price, then IOC expires the rest, FOK expires entirely unless it all fits, GTC rests the rest."""
        rules = self.rules(order.symbol)
        qty = self._fillable(account, order, order.orig_qty)
        step = rules.market_step if order.type == "MARKET" else rules.step
        if order.type == "LIMIT":
            qty = min(qty, m.quantity_within(order.side, mid, rules.tick, spread, order.price, step))
            if order.time_in_force == "FOK" and qty < order.orig_qty:
                qty = m.ZERO
        chunks = m.split_quantity(qty, step) if qty else []
        prices = m.taker_prices(order.side, mid, rules.tick, chunks, spread)
        if order.type == "LIMIT":  # the grid rounding of the last level never passes the limit
            prices = [min(p, order.price) if order.side == "BUY" else max(p, order.price) for p in prices]
        fills = list(zip(chunks, prices, strict=True))
        if fills:
            self._fill(change, account, order, fills, maker=False, now=now)
        if order.is_open and (
            order.type == "MARKET" or order.time_in_force in ("IOC", "FOK") or self._only_reduces(order)
        ):
            self._finish(change, order, "EXPIRED", now)

    def _find_order(self, account_id: str, params: Mapping[str, str]) -> Order:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        order_id = _parse_int(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            found = self.orders.get(order_id)
            if found is None or found.account_id != account_id or found.symbol != symbol:
                raise unknown_order()
            return found
        matches = [
            o
            for o in self.orders.values()
            if o.account_id == account_id and o.symbol == symbol and o.client_order_id == client_id
        ]
        if not matches:
            raise unknown_order()
        return matches[-1]

    def get_order(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        self._caught_up(account_id, now)
        with self._lock:
            return self.order_view(self._find_order(account_id, params))

    def cancel_order(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        """DELETE /fapi/v1/order: an unknown order is -2011 here (Binance), while querying it is -2013."""
        self._caught_up(account_id, now)
        with self._change() as change:
            try:
                order = self._find_order(account_id, params)
            except BinanceError as exc:
                if exc.code == unknown_order().code:
                    raise BinanceError(-2011, "Unknown order sent.") from None
                raise
            if not order.is_open:
                raise BinanceError(-2011, "Unknown order sent.")
            self._finish(change, order, "CANCELED", now)
            return self.order_view(order)

    def cancel_all(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        self._caught_up(account_id, now)
        with self._change() as change:
            for order in self._open_orders(account_id, symbol):
                self._finish(change, order, "CANCELED", now)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def countdown_cancel_all(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        """POST /fapi/v1/countdownCancelAll: every open order of the symbol is cancelled once `countdownTime` ms
        pass without another call (a dead-man switch); 0 stops the countdown."""
        self._account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        countdown = _parse_int(params, "countdownTime")
        if countdown is None:
            raise mandatory_missing("countdownTime")
        if countdown < 0:
            raise BinanceError(-1130, "Data sent for parameter 'countdownTime' is not valid: must be >= 0 ms.")
        self._caught_up(account_id, now)
        with self._lock:
            if countdown == 0:
                self._countdowns.pop((account_id, symbol), None)
            else:
                self._countdowns[(account_id, symbol)] = now + countdown
        return {"symbol": symbol, "countdownTime": str(countdown)}

    def _fire_countdowns(self, change: _Change, account: AccountState, now: int) -> None:
        due = [k for k, deadline in self._countdowns.items() if k[0] == account.account_id and deadline <= now]
        for key in sorted(due):
            del self._countdowns[key]
            for order in self._open_orders(account.account_id, key[1]):
                self._finish(change, order, "CANCELED", now)

    def open_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        symbol = params.get("symbol") or None
        if symbol:
            self.rules(symbol)
        self._caught_up(account_id, now)
        with self._lock:
            return [self.order_view(o) for o in self._open_orders(account_id, symbol)]

    def all_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        from_id = _parse_int(params, "orderId")
        start, end = _parse_int(params, "startTime"), _parse_int(params, "endTime")
        limit = _limit(params, 500, 1000)
        self._caught_up(account_id, now)
        with self._lock:
            chosen = [
                o
                for o in self.orders.values()
                if o.account_id == account_id
                and o.symbol == symbol
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start)
                and (end is None or o.time <= end)
            ]
            chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
            return [self.order_view(o) for o in chosen]

    def order_view(self, order: Order) -> dict:
        return {
            "orderId": order.order_id,
            "symbol": order.symbol,
            "status": order.status,
            "clientOrderId": order.client_order_id,
            "price": m.fmt(order.price),
            "avgPrice": m.fmt(order.avg_price.quantize(m.ENTRY_PLACES)),
            "origQty": m.fmt(order.orig_qty),
            "executedQty": m.fmt(order.executed_qty),
            "cumQty": m.fmt(order.executed_qty),
            "cumQuote": m.fmt(order.cum_quote),
            "timeInForce": order.time_in_force,
            "type": order.type,
            "reduceOnly": order.reduce_only,
            "closePosition": False,
            "side": order.side,
            "positionSide": order.position_side,
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": order.type,
            "priceMatch": order.price_match,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": order.time,
            "updateTime": order.update_time,
        }

    # ----- history ------------------------------------------------------------------------------------------------

    def user_trades(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        order_id = _parse_int(params, "orderId")
        from_id = _parse_int(params, "fromId")
        start, end = _time_range(params)
        limit = _limit(params, 500, 1000)
        self._caught_up(account_id, now)
        with self._lock:
            chosen = [
                t
                for t in self.trades.get(account_id, [])
                if t.symbol == symbol
                and (order_id is None or t.order_id == order_id)
                and (from_id is None or t.id >= from_id)
                and (start is None or t.time >= start)
                and (end is None or t.time <= end)
            ]
        chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
        return [
            {
                "buyer": t.side == "BUY",
                "commission": m.fmt(t.commission),
                "commissionAsset": "USDT",
                "id": t.id,
                "maker": t.maker,
                "orderId": t.order_id,
                "price": m.fmt(t.price),
                "qty": m.fmt(t.qty),
                "quoteQty": m.fmt(t.quote_qty),
                "realizedPnl": m.fmt(t.realized_pnl),
                "side": t.side,
                "positionSide": t.position_side,
                "symbol": t.symbol,
                "time": t.time,
            }
            for t in chosen
        ]

    def income_history(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        """GET /fapi/v1/income. Without startTime the latest `limit` rows (of the last 7 days when neither bound
        is given, as Binance); with startTime the earliest `limit` rows from it."""
        symbol = params.get("symbol") or None
        kind = params.get("incomeType") or None
        if kind is not None and kind not in INCOME_TYPES:
            raise BinanceError(
                -1130,
                f"Data sent for parameter 'incomeType' is not valid: {kind!r} is not one of {list(INCOME_TYPES)}.",
            )
        start, end = _time_range(params)
        limit = _limit(params, 100, 1000)
        if start is None and end is None:
            start = now - 7 * 24 * 3600 * 1000
            newest = True
        else:
            newest = start is None
        self._caught_up(account_id, now)
        with self._lock:
            chosen = [
                i
                for i in self.income.get(account_id, [])
                if (symbol is None or i.symbol == symbol)
                and (kind is None or i.income_type == kind)
                and (start is None or i.time >= start)
                and (end is None or i.time <= end)
            ]
        chosen = chosen[-limit:] if newest else chosen[:limit]
        return [
            {
                "symbol": i.symbol,
                "incomeType": i.income_type,
                "income": m.fmt(i.income),
                "asset": "USDT",
                "info": i.info or i.income_type,
                "time": i.time,
                "tranId": i.tran_id,
                "tradeId": i.trade_id,
            }
            for i in chosen
        ]

    def leverage_bracket(self, account_id: str, params: Mapping[str, str]) -> dict | list[dict]:
        """GET /fapi/v1/leverageBracket: one object when `symbol` is sent, else a list over every symbol."""
        self._account(account_id)
        symbol = params.get("symbol") or None
        symbols = [symbol] if symbol else self.symbols()
        answers = [{"symbol": s, "brackets": m.leverage_brackets(self.rules(s).maint_rate)} for s in symbols]
        return answers[0] if symbol else answers

    # ----- the order book (public) --------------------------------------------------------------------------------

    def book(self, symbol: str, levels: int, now: int) -> tuple[list[Level], list[Level]]:
        """(bids, asks) of `symbol` at `now`, as book.py derives them from the fill model."""
        rules = self.rules(symbol)
        mid = self.mid_price(symbol, now)
        spread = m.half_spread_ticks(symbol)
        bids = book_side("SELL", mid, rules.tick, spread, rules.step, levels)
        asks = book_side("BUY", mid, rules.tick, spread, rules.step, levels)
        return bids, asks

    def depth(self, params: Mapping[str, str], now: int) -> dict:
        """GET /fapi/v1/depth."""
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        limit = _parse_int(params, "limit", 500)
        if limit not in DEPTH_LIMITS:
            raise BinanceError(
                -1130, f"Data sent for parameter 'limit' is not valid: must be one of {list(DEPTH_LIMITS)}."
            )
        bids, asks = self.book(symbol, limit, now)
        return {
            "lastUpdateId": now,
            "E": now,
            "T": now,
            "bids": [[m.fmt(p), m.fmt(q)] for p, q in bids],
            "asks": [[m.fmt(p), m.fmt(q)] for p, q in asks],
        }

    def book_ticker(self, params: Mapping[str, str], now: int) -> dict | list[dict]:
        """GET /fapi/v1/ticker/bookTicker: the top of the book of one symbol, or of every listed symbol."""
        symbol = params.get("symbol") or None

        def top(s: str) -> dict:
            bids, asks = self.book(s, 1, now)
            return {
                "symbol": s,
                "bidPrice": m.fmt(bids[0][0]) if bids else "0",
                "bidQty": m.fmt(bids[0][1]) if bids else "0",
                "askPrice": m.fmt(asks[0][0]) if asks else "0",
                "askQty": m.fmt(asks[0][1]) if asks else "0",
                "time": now,
                "lastUpdateId": now,
            }

        if symbol:
            return top(symbol)
        listed = []
        for s in self.symbols():
            try:
                listed.append(top(s))
            except BinanceError:  # not listed yet at `now`
                continue
        return listed

    def commission_rate(self, account_id: str, params: Mapping[str, str]) -> dict:
        self._account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.rules(symbol)
        return {
            "symbol": symbol,
            "makerCommissionRate": m.fmt(m.MAKER_FEE),
            "takerCommissionRate": m.fmt(m.TAKER_FEE),
        }

    # ----- account views ------------------------------------------------------------------------------------------

    def account_valuation(self, account_id: str, now: int) -> Valuation:
        """Settle what is due for the account, then value it."""
        self._caught_up(account_id, now)
        with self._lock:
            return self.valuation(account_id, now)
