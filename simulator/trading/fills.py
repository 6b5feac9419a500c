"""Executing orders: taker fills against the book, resting orders meeting the market, and booking every fill.

Taker fills start at mid ± a per-symbol half spread of 1-3 ticks and walk up to three levels with square-root impact
(margin.py; the book of book.py shows the same levels); a crossing LIMIT takes only what fits within its price.
Resting orders fill whole, as maker at their own price, once the market mid reaches it. Isolated positions hold their
opening margin in `isolated_wallet`, released pro rata on reduction; realized PnL and fees go to the wallet.
"""

from __future__ import annotations

from decimal import Decimal

from simulator.trading import margin as m
from simulator.trading.events import order_trade_update
from simulator.trading.ledger import Change, Ledger
from simulator.trading.state import AccountState, Order, Trade


def only_reduces(order: Order) -> bool:
    """Reduce-only orders, and in hedge mode every closing order (SELL LONG, BUY SHORT)."""
    return order.reduce_only or (order.side, order.position_side) in (("SELL", "LONG"), ("BUY", "SHORT"))


def fillable(ledger: Ledger, account: AccountState, order: Order, qty: Decimal) -> Decimal:
    """Orders that only reduce never fill beyond the position they close (Binance trims or expires them)."""
    if not only_reduces(order):
        return qty
    amount = ledger.position(account.account_id, order.symbol, order.position_side).amount
    if amount == 0 or (amount > 0) == (order.side == "BUY"):
        return m.ZERO
    return min(qty, abs(amount))


def finish(change: Change, order: Order, status: str, now: int) -> None:
    """End an order's life (CANCELED, EXPIRED) with its ORDER_TRADE_UPDATE."""
    order.status = status
    order.update_time = now
    change.touch(order)
    change.emit(order.account_id, order_trade_update(order, status, now))


def book_fills(
    ledger: Ledger,
    change: Change,
    account: AccountState,
    order: Order,
    fills: list[tuple[Decimal, Decimal]],
    maker: bool,
    now: int,
) -> None:
    """Book fills of `order`: position, wallet, trades, income, and their events."""
    leverage = account.leverage_for(order.symbol)
    isolated = account.isolated(order.symbol)
    pos = ledger.position(account.account_id, order.symbol, order.position_side)
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
            ledger.next_id(change, "next_trade_id"),
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
        ledger.trades.setdefault(account.account_id, []).append(trade)
        if effect.realized_pnl:
            ledger.add_income(
                change, account.account_id, order.symbol, "REALIZED_PNL", effect.realized_pnl, now, str(trade.id)
            )
        if fee:
            ledger.add_income(change, account.account_id, order.symbol, "COMMISSION", -fee, now, str(trade.id))
        change.touch(trade)
        change.emit(account.account_id, order_trade_update(order, "TRADE", now, trade))
    change.touch(account, pos, order)
    change.emit(account.account_id, ledger.account_event("ORDER", account, [pos], balance_change, now))


def take(
    ledger: Ledger, change: Change, account: AccountState, order: Order, mid: Decimal, spread: int, now: int
) -> None:
    """Execute a crossing order as taker: MARKET walks a few price levels; LIMIT takes the levels within its
    price, then IOC expires the rest, FOK expires entirely unless it all fits, GTC rests the rest."""
    rules = ledger.rules(order.symbol)
    qty = fillable(ledger, account, order, order.orig_qty)
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
        book_fills(ledger, change, account, order, fills, maker=False, now=now)
    if order.is_open and (order.type == "MARKET" or order.time_in_force in ("IOC", "FOK") or only_reduces(order)):
        finish(change, order, "EXPIRED", now)


def match_resting(ledger: Ledger, change: Change, account: AccountState, now: int) -> None:
    """Fill (as maker, at their price) the resting LIMIT orders the market mid has reached."""
    mids: dict[str, Decimal] = {}
    for order in ledger.open_orders(account.account_id):
        if order.symbol not in mids:
            mids[order.symbol] = ledger.mid_price(order.symbol, now)
        mid = mids[order.symbol]
        if (order.side == "BUY" and mid <= order.price) or (order.side == "SELL" and mid >= order.price):
            qty = fillable(ledger, account, order, order.remaining)
            if qty > 0:
                book_fills(ledger, change, account, order, [(qty, order.price)], maker=True, now=now)
            if order.is_open:
                finish(change, order, "EXPIRED", now)
