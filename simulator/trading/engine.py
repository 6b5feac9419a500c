"""The simulated exchange's accounts: `Exchange` composes the parts that hold each responsibility.

- ledger.py: the records in memory, their SQLite mirror (state.py) and the one transaction every change runs in;
  events are published only after their change is committed.
- orders.py (placing, finding, cancelling, the countdown switch) over fills.py (taker and maker execution, booking
  fills) and book.py (the order book the fill model implies); rules.py and params.py validate as Binance does.
- funding.py: funding settlements; valuation.py: margins and available balance at mark; history.py: trades and income.

Work that depends on time passing (countdowns, funding settlements, resting orders meeting the market, listen-key
expiry) is done lazily whenever an account is touched and from `on_tick`, which the server calls periodically; both
settle "everything due up to now", so a restart never skips or repeats a funding payment. The liquidation price is
reported (margin.liquidation_price) but positions are never force-liquidated.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from lsq.config import Account
from simulator.clock import Clock
from simulator.errors import BinanceError, mandatory_missing
from simulator.trading import book, history
from simulator.trading import margin as m
from simulator.trading.book import Level
from simulator.trading.equity_log import EquityLog
from simulator.trading.fills import match_resting
from simulator.trading.funding import Funding
from simulator.trading.ledger import Change, Ledger, MarketModel, Publish
from simulator.trading.orders import OrderDesk, order_view
from simulator.trading.params import parse_bool, parse_int
from simulator.trading.rules import Rules
from simulator.trading.state import (
    LISTEN_KEY_TTL_MS,
    AccountState,
    Counters,
    Income,
    ListenKey,
    Order,
    Position,
    Store,
    Trade,
)
from simulator.trading.valuation import Valuation, value

__all__ = ["Exchange", "MarketModel"]


class Exchange:
    """All simulated accounts. Thread-safe: every change runs under the ledger's one lock."""

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
        self.ledger = Ledger(market, self.store, publish)
        self.funding = Funding(self.ledger)
        self.desk = OrderDesk(self.ledger, self._caught_up)
        self.equity_log = EquityLog()  # each served account answer's equity: /admin/equity
        self._keys = {
            a.api_key.get_secret_value(): (a.account_id, a.api_secret.get_secret_value())
            for a in accounts
            if a.has_credentials and a.api_key is not None and a.api_secret is not None
        }
        now = clock.now_ms()
        with self.ledger.change() as change:
            for account in accounts:
                if account.account_id not in self.accounts:
                    self._open_account(change, account, now)

    # ----- the records (read-only views for the endpoints and tests) --------------------------------------------------

    @property
    def accounts(self) -> dict[str, AccountState]:
        return self.ledger.accounts

    @property
    def positions(self) -> dict[tuple[str, str, str], Position]:
        return self.ledger.positions

    @property
    def orders(self) -> dict[int, Order]:
        return self.ledger.orders

    @property
    def trades(self) -> dict[str, list[Trade]]:
        return self.ledger.trades

    @property
    def income(self) -> dict[str, list[Income]]:
        return self.ledger.income

    @property
    def listen_keys(self) -> dict[str, ListenKey]:
        return self.ledger.listen_keys

    @property
    def counters(self) -> Counters:
        return self.ledger.counters

    def rules(self, symbol: str) -> Rules:
        return self.ledger.rules(symbol)

    def mid_price(self, symbol: str, now: int) -> Decimal:
        return self.ledger.mid_price(symbol, now)

    def mark_price(self, symbol: str, now: int) -> Decimal:
        return self.ledger.mark_price(symbol, now)

    def symbols(self) -> list[str]:
        return self.ledger.symbols()

    def close(self) -> None:
        self.ledger.close()

    # ----- accounts and transfers -------------------------------------------------------------------------------------

    def _open_account(self, change: Change, account: Account, now: int) -> None:
        balance = m.money(Decimal(str(account.starting_balance_usdt)))
        state = AccountState(account.account_id, balance, funding_settled_ms=now, update_time=now)
        self.ledger.accounts[state.account_id] = state
        change.touch(state)
        if balance:
            self.ledger.add_income(change, state.account_id, "", "TRANSFER", balance, now)

    def transfer(self, account_id: str, kind: str, amount: Decimal, now: int) -> dict:
        """Move USDT into (DEPOSIT) or out of (WITHDRAW) the futures wallet, as a transfer from the spot wallet does
        on Binance: a TRANSFER income record, the wallet changed, and ACCOUNT_UPDATE with reason DEPOSIT/WITHDRAW.
        A withdrawal is limited to the account's maxWithdrawAmount. Raises ValueError naming the problem."""
        if account_id not in self.ledger.accounts:
            raise ValueError(f"unknown account {account_id!r}; known: {sorted(self.ledger.accounts)}")
        if kind not in ("DEPOSIT", "WITHDRAW"):
            raise ValueError(f"type must be DEPOSIT or WITHDRAW, got {kind!r}")
        if not amount.is_finite() or amount <= 0 or amount != m.money(amount):
            raise ValueError(f"amount must be a positive USDT amount with at most 8 decimals, got {amount}")
        self._caught_up(account_id, now)
        with self.ledger.change() as change:
            account = self.ledger.accounts[account_id]
            if kind == "WITHDRAW":
                v = value(self.ledger, account_id, now)
                allowed = m.money(max(m.ZERO, min(v.available, v.cross_wallet)))
                if amount > allowed:
                    raise ValueError(f"cannot withdraw {m.fmt(amount)} USDT: at most {m.fmt(allowed)} is withdrawable")
            signed = amount if kind == "DEPOSIT" else -amount
            account.wallet += signed
            account.update_time = now
            change.touch(account)
            tran_id = self.ledger.add_income(change, account_id, "", "TRANSFER", signed, now)
            change.emit(account_id, self.ledger.account_event(kind, account, [], signed, now))
        return {
            "account": account_id,
            "type": kind,
            "amount": m.fmt(amount),
            "tranId": tran_id,
            "walletBalance": m.fmt(account.wallet),
            "time": now,
        }

    # ----- API keys and listen keys -----------------------------------------------------------------------------------

    def secret_for_api_key(self, api_key: str) -> tuple[str, str] | None:
        return self._keys.get(api_key)

    def account_for_listen_key(self, key: str, now_ms: int) -> str | None:
        with self.ledger.lock:
            found = self.ledger.listen_keys.get(key)
            return found.account_id if found is not None and found.expires_ms > now_ms else None

    def new_listen_key(self, account_id: str, now: int) -> str:
        """POST /listenKey: the account's live key extended, or a new one (as Binance, one key per account)."""
        self.ledger.account(account_id)
        with self.ledger.change() as change:
            live = [k for k in self.ledger.listen_keys.values() if k.account_id == account_id and k.expires_ms > now]
            key = live[0] if live else ListenKey(secrets.token_urlsafe(48)[:64], account_id, 0)
            key.expires_ms = now + LISTEN_KEY_TTL_MS
            self.ledger.listen_keys[key.listen_key] = key
            change.touch(key)
            return key.listen_key

    def _own_listen_key(self, account_id: str, key: str | None, now: int) -> ListenKey:
        if key:
            found = self.ledger.listen_keys.get(key)
            if found is None or found.account_id != account_id or found.expires_ms <= now:
                raise BinanceError(-1125, "This listenKey does not exist.")
            return found
        live = [k for k in self.ledger.listen_keys.values() if k.account_id == account_id and k.expires_ms > now]
        if not live:
            raise BinanceError(-1125, "This listenKey does not exist.")
        return live[0]

    def keepalive_listen_key(self, account_id: str, key: str | None, now: int) -> str:
        with self.ledger.change() as change:
            found = self._own_listen_key(account_id, key, now)
            found.expires_ms = now + LISTEN_KEY_TTL_MS
            change.touch(found)
            return found.listen_key

    def close_listen_key(self, account_id: str, key: str | None, now: int) -> None:
        with self.ledger.change() as change:
            found = self._own_listen_key(account_id, key, now)
            del self.ledger.listen_keys[found.listen_key]
            change.delete(found)

    def _expire_listen_keys(self, change: Change, now: int) -> None:
        for key in [k for k in self.ledger.listen_keys.values() if k.expires_ms <= now]:
            del self.ledger.listen_keys[key.listen_key]
            change.delete(key)
            change.emit(key.account_id, {"e": "listenKeyExpired", "E": now, "listenKey": key.listen_key})

    # ----- time passing: countdowns, funding and resting orders -------------------------------------------------------

    def on_tick(self, now_ms: int) -> None:
        """Settle everything due up to `now_ms` for every account; the server calls this periodically."""
        with self.ledger.change() as change:
            for account in self.ledger.accounts.values():
                self._catch_up(change, account, now_ms)
            self._expire_listen_keys(change, now_ms)

    def _catch_up(self, change: Change, account: AccountState, now: int) -> None:
        self.desk.fire_countdowns(change, account, now)
        self.funding.settle(change, account, now)
        match_resting(self.ledger, change, account, now)

    def _caught_up(self, account_id: str | None, now: int) -> AccountState:
        """The account, after committing what became due (its own transaction, so a rejected request that
        follows never rolls it back)."""
        account = self.ledger.account(account_id)
        with self.ledger.change() as change:
            self._catch_up(change, account, now)
        return account

    # ----- contract settings ------------------------------------------------------------------------------------------

    def change_leverage(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        account = self.ledger.account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        leverage = parse_int(params, "leverage")
        if leverage is None:
            raise mandatory_missing("leverage")
        if not 1 <= leverage <= 125:
            raise BinanceError(-4028, f"Leverage {leverage} is not valid")
        self._caught_up(account_id, now)
        with self.ledger.change() as change:
            held = sum(
                (abs(p.amount) for p in self.ledger.positions_of(account_id) if p.symbol == symbol), m.ZERO
            ) * self.ledger.mark_price(symbol, now)
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
        account = self.ledger.account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        wanted = (params.get("marginType") or "").upper()
        if not wanted:
            raise mandatory_missing("marginType")
        wanted = {"CROSS": "CROSSED"}.get(wanted, wanted)
        if wanted not in ("CROSSED", "ISOLATED"):
            raise BinanceError(-1130, "Data sent for parameter 'marginType' is not valid.")
        self._caught_up(account_id, now)
        with self.ledger.change() as change:
            if (account.isolated(symbol) and wanted == "ISOLATED") or (
                not account.isolated(symbol) and wanted == "CROSSED"
            ):
                raise BinanceError(-4046, "No need to change margin type.")
            if self.ledger.open_orders(account_id, symbol):
                raise BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")
            if any(p.amount != 0 for p in self.ledger.positions_of(account_id) if p.symbol == symbol):
                raise BinanceError(-4048, "Margin type cannot be changed if there exists position.")
            account.margin_type[symbol] = wanted
            account.update_time = now
            change.touch(account)
            change.emit(account_id, self.ledger.account_event("MARGIN_TYPE_CHANGE", account, [], m.ZERO, now))
        return {"code": 200, "msg": "success"}

    def change_position_mode(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        account = self.ledger.account(account_id)
        wanted = parse_bool(params, "dualSidePosition")
        if wanted is None:
            raise mandatory_missing("dualSidePosition")
        self._caught_up(account_id, now)
        with self.ledger.change() as change:
            if wanted == account.dual_side:
                raise BinanceError(-4059, "No need to change position side.")
            if self.ledger.open_orders(account_id):
                raise BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
            if any(p.amount != 0 for p in self.ledger.positions_of(account_id)):
                raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
            account.dual_side = wanted
            account.update_time = now
            change.touch(account)
        return {"code": 200, "msg": "success"}

    def position_mode(self, account_id: str) -> dict:
        return {"dualSidePosition": self.ledger.account(account_id).dual_side}

    # ----- orders (orders.py) -----------------------------------------------------------------------------------------

    def place_order(self, account_id: str, params: Mapping[str, str], now: int, *, test: bool = False) -> dict:
        return self.desk.place(account_id, params, now, test=test)

    def batch_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        return self.desk.batch(account_id, params, now)

    def get_order(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        return self.desk.get(account_id, params, now)

    def cancel_order(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        return self.desk.cancel(account_id, params, now)

    def cancel_all(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        return self.desk.cancel_all(account_id, params, now)

    def countdown_cancel_all(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        return self.desk.countdown(account_id, params, now)

    def open_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        return self.desk.open_orders(account_id, params, now)

    def all_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        return self.desk.all_orders(account_id, params, now)

    def order_view(self, order: Order) -> dict:
        return order_view(order)

    # ----- history (history.py) ---------------------------------------------------------------------------------------

    def user_trades(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        return history.user_trades(self.ledger, account_id, params, lambda: self._caught_up(account_id, now))

    def income_history(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        return history.income_history(self.ledger, account_id, params, now, lambda: self._caught_up(account_id, now))

    def commission_rate(self, account_id: str, params: Mapping[str, str]) -> dict:
        self.ledger.account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        return {
            "symbol": symbol,
            "makerCommissionRate": m.fmt(m.MAKER_FEE),
            "takerCommissionRate": m.fmt(m.TAKER_FEE),
        }

    def leverage_bracket(self, account_id: str, params: Mapping[str, str]) -> dict | list[dict]:
        """GET /fapi/v1/leverageBracket: one object when `symbol` is sent, else a list over every symbol."""
        self.ledger.account(account_id)
        symbol = params.get("symbol") or None
        symbols = [symbol] if symbol else self.ledger.symbols()
        answers = [{"symbol": s, "brackets": m.leverage_brackets(self.ledger.rules(s).maint_rate)} for s in symbols]
        return answers[0] if symbol else answers

    # ----- the order book (book.py) -----------------------------------------------------------------------------------

    def book(self, symbol: str, levels: int, now: int) -> tuple[list[Level], list[Level]]:
        return book.book_of(self.ledger, symbol, levels, now)

    def depth(self, params: Mapping[str, str], now: int) -> dict:
        return book.depth(self.ledger, params, now)

    def book_ticker(self, params: Mapping[str, str], now: int) -> dict | list[dict]:
        return book.book_ticker(self.ledger, params, now)

    # ----- account views (valuation.py) -------------------------------------------------------------------------------

    def valuation(self, account_id: str, now: int) -> Valuation:
        """Value the account at mark prices (no state change)."""
        return value(self.ledger, account_id, now)

    def account_valuation(self, account_id: str, now: int) -> Valuation:
        """Settle what is due for the account, then value it."""
        self._caught_up(account_id, now)
        with self.ledger.lock:
            return value(self.ledger, account_id, now)
