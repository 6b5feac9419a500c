"""Position history from the real fills and income records: every change (open, increase, reduce, close, flip)
and every leg from open to close, with average entry, exit price, realized PnL, fees, funding and holding time.

The fills of one order are one change (an order is what the trader decided). Realized PnL and fees are the
exchange's (userTrades `realizedPnl`, `commission`), not recomputed; funding is the FUNDING_FEE income booked while
the position stood as the change left it. Walking the changes is a fold (each depends on the position before it),
once per symbol and position side over orders, not over ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl

from monitoring.store import MONEY

ZERO = Decimal(0)

CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "time_ms": pl.Int64(),
    "symbol": pl.String(),
    "position_side": pl.String(),
    "order_id": pl.Int64(),
    "action": pl.String(),
    "side": pl.String(),
    "qty": MONEY,
    "price": MONEY,
    "position_before": MONEY,
    "position_after": MONEY,
    "avg_entry_before": MONEY,
    "avg_entry_after": MONEY,
    "exit_price": MONEY,
    "realized_pnl": MONEY,
    "fee": MONEY,
    "funding": MONEY,
    "opened_ms": pl.Int64(),
    "holding_ms": pl.Int64(),
    "leg": pl.Int64(),
}


def orders_of(fills: pl.DataFrame) -> pl.DataFrame:
    """Fills merged per order: total qty, VWAP price, summed commission and realized PnL, time of the last fill."""
    return (
        fills.group_by("symbol", "position_side", "order_id", "side")
        .agg(
            pl.col("time_ms").max(),
            pl.col("trade_id").min().alias("first_trade"),
            pl.col("qty").sum(),
            pl.col("quote_qty").sum(),
            pl.col("commission").sum(),
            pl.col("realized_pnl").sum(),
        )
        .sort("time_ms", "first_trade")
    )


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


LEG_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "position_side": pl.String(),
    "leg": pl.Int64(),
    "direction": pl.String(),
    "max_qty": MONEY,
    "avg_entry": MONEY,
    "avg_exit": MONEY,
    "realized_pnl": MONEY,
    "fee": MONEY,
    "funding": MONEY,
    "opened_ms": pl.Int64(),
    "closed_ms": pl.Int64(),
    "holding_ms": pl.Int64(),
}


@dataclass
class _Leg:
    symbol: str
    position_side: str
    leg: int
    direction: str
    opened_ms: int
    max_qty: Decimal = ZERO
    open_qty: Decimal = ZERO
    open_quote: Decimal = ZERO
    close_qty: Decimal = ZERO
    close_quote: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fee: Decimal = ZERO
    closed_ms: int | None = None

    def row(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "position_side": self.position_side,
            "leg": self.leg,
            "direction": self.direction,
            "max_qty": self.max_qty,
            "avg_entry": self.open_quote / self.open_qty if self.open_qty else None,
            "avg_exit": self.close_quote / self.close_qty if self.close_qty else None,
            "realized_pnl": self.realized_pnl,
            "fee": self.fee,
            "funding": ZERO,
            "opened_ms": self.opened_ms,
            "closed_ms": self.closed_ms,
            "holding_ms": None if self.closed_ms is None else self.closed_ms - self.opened_ms,
        }


@dataclass
class _Book:
    amount: Decimal = ZERO
    entry: Decimal = ZERO
    leg: _Leg | None = None
    legs: int = 0
    rows: list[dict[str, object]] = field(default_factory=list)
    done: list[_Leg] = field(default_factory=list)

    def open_leg(self, order: dict[str, object], amount: Decimal, t: int) -> _Leg:
        self.legs += 1
        self.leg = _Leg(
            str(order["symbol"]), str(order["position_side"]), self.legs, "LONG" if amount > 0 else "SHORT", t
        )
        self.done.append(self.leg)
        return self.leg


def _walk(book: _Book, order: dict[str, object]) -> None:
    qty, quote = Decimal(str(order["qty"])), Decimal(str(order["quote_qty"]))
    if qty == 0:
        return
    price = quote / qty
    fee, realized = Decimal(str(order["commission"])), Decimal(str(order["realized_pnl"]))
    t = int(order["time_ms"])  # type: ignore[call-overload]
    delta = qty if order["side"] == "BUY" else -qty
    before, entry_before = book.amount, book.entry
    after = before + delta
    leg = book.leg
    closed = min(abs(before), qty) if before != 0 and _sign(delta) != _sign(before) else ZERO
    if before == 0 or leg is None:
        action, entry, exit_price = "open", price, None
        leg = book.open_leg(order, after, t)
    elif _sign(after) == _sign(before) and abs(after) > abs(before):
        action, entry, exit_price = "increase", (abs(before) * book.entry + qty * price) / abs(after), None
    elif _sign(after) == _sign(before):
        action, entry, exit_price = "reduce", book.entry, price
    elif after == 0:
        action, entry, exit_price = "close", ZERO, price
    else:
        action, entry, exit_price = "flip", price, price
    opened = leg.opened_ms
    share = closed / qty
    leg.close_qty += closed
    leg.close_quote += closed * price
    leg.open_qty += qty - closed if action != "flip" else ZERO
    leg.open_quote += (qty - closed) * price if action != "flip" else ZERO
    leg.realized_pnl += realized
    leg.fee += fee * share if action == "flip" else fee
    leg.max_qty = max(leg.max_qty, abs(before) if action == "flip" else abs(after))
    if action in ("close", "flip"):
        leg.closed_ms = t
        book.leg = None
    if action == "flip":
        new = book.open_leg(order, after, t)
        new.open_qty, new.open_quote, new.max_qty, new.fee = (
            abs(after),
            abs(after) * price,
            abs(after),
            fee - fee * share,
        )
    book.rows.append(
        {
            "time_ms": t,
            "symbol": order["symbol"],
            "position_side": order["position_side"],
            "order_id": order["order_id"],
            "action": action,
            "side": order["side"],
            "qty": qty,
            "price": price,
            "position_before": before,
            "position_after": after,
            "avg_entry_before": entry_before,
            "avg_entry_after": entry,
            "exit_price": exit_price,
            "realized_pnl": realized,
            "fee": fee,
            "funding": ZERO,
            "opened_ms": opened,
            "holding_ms": t - opened,
            "leg": book.leg.leg if book.leg is not None else leg.leg,
        }
    )
    book.amount, book.entry = after, entry


def _frame(rows: list[dict[str, object]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Rows holding Decimals as an exact typed frame (through their strings)."""
    text = {k: (pl.String() if v == MONEY else v) for k, v in schema.items()}
    cells = [{k: (str(r[k]) if schema[k] == MONEY and r[k] is not None else r[k]) for k in schema} for r in rows]
    return pl.DataFrame(cells, schema=text).with_columns(pl.col(k).cast(MONEY) for k, v in schema.items() if v == MONEY)


def _fold(fills: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    books: dict[tuple[str, str], _Book] = {}
    for order in orders_of(fills).iter_rows(named=True):
        _walk(books.setdefault((order["symbol"], order["position_side"]), _Book()), order)
    changes = _frame([r for b in books.values() for r in b.rows], CHANGE_SCHEMA).sort("time_ms", "symbol", "order_id")
    legs = _frame([leg.row() for b in books.values() for leg in b.done], LEG_SCHEMA)
    return changes, legs


def _funding(changes: pl.DataFrame, income: pl.DataFrame) -> pl.DataFrame:
    """FUNDING_FEE records with the change they accrued under: the latest change of the symbol at or before them."""
    funding = income.filter(pl.col("income_type") == "FUNDING_FEE").select("time_ms", "symbol", "income")
    held = changes.select("time_ms", "symbol", "position_side", "leg").with_row_index("_change")
    return (
        funding.sort("time_ms")
        .join_asof(held.sort("time_ms"), on="time_ms", by="symbol", strategy="backward", check_sortedness=False)
        .filter(pl.col("_change").is_not_null())
    )


def position_changes(fills: pl.DataFrame, income: pl.DataFrame) -> pl.DataFrame:
    """Every position change, oldest first; `funding` is what was booked while the position stood as it left it,
    `leg` the leg it belongs to afterwards (a flip starts the next one).

    The history must start flat (all fills since the account was last flat in each symbol): the fold starts
    every symbol at 0.
    """
    changes, _ = _fold(fills)
    per_change = _funding(changes, income).group_by("_change").agg(pl.col("income").sum().alias("_funding"))
    return (
        changes.with_row_index("_change")
        .join(per_change, on="_change", how="left")
        .with_columns(pl.col("_funding").fill_null(0).cast(MONEY).alias("funding"))
        .drop("_change", "_funding")
        .sort("time_ms", "symbol", "order_id")
    )


def position_legs(fills: pl.DataFrame, income: pl.DataFrame) -> pl.DataFrame:
    """One row per leg (open to close, or to the flip that reverses it): direction, largest size, average entry and
    exit, realized PnL, fees (a flip's fee split by quantity), funding, opened/closed time and holding time. A leg
    still open has no closed time."""
    changes, legs = _fold(fills)
    per_leg = (
        _funding(changes, income)
        .group_by("symbol", "position_side", "leg")
        .agg(pl.col("income").sum().alias("_funding"))
    )
    return (
        legs.join(per_leg, on=["symbol", "position_side", "leg"], how="left")
        .with_columns(pl.col("_funding").fill_null(0).cast(MONEY).alias("funding"))
        .drop("_funding")
        .sort("opened_ms", "symbol", "leg")
    )
