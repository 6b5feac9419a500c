"""Valuing an account at mark prices: margins, available balance, liquidation prices, and the margin a new order takes.

Initial margin = notional / leverage (positions at mark, open orders at their price; in one-way mode orders that only
close reserve nothing and the larger side counts). Available = cross wallet + cross uPnL - margins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from simulator.trading import margin as m
from simulator.trading.ledger import Ledger
from simulator.trading.state import AccountState, Order, Position


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


def value(ledger: Ledger, account_id: str, now: int) -> Valuation:
    """Value the account at mark prices (no state change)."""
    account = ledger.account(account_id)
    open_orders = ledger.open_orders(account_id)
    symbols = {p.symbol for p in ledger.positions_of(account_id) if p.amount != 0} | {o.symbol for o in open_orders}
    marks = {s: ledger.mark_price(s, now) for s in sorted(symbols)}
    amounts: dict[str, dict[str, Decimal]] = {}
    for p in ledger.positions_of(account_id):
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
    for p in ledger.positions_of(account_id):
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
                maint_margin=m.maint_margin(notional, ledger.rules(p.symbol).maint_rate),
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
            ledger.rules(v.position.symbol).maint_rate,
            ledger.rules(v.position.symbol).tick,
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


def margin_needed(
    ledger: Ledger,
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
    mark = ledger.mark_price(symbol, now)
    amounts = {p.side: p.amount for p in ledger.positions_of(account.account_id) if p.symbol == symbol}
    orders = ledger.open_orders(account.account_id, symbol)

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
