"""Position history on scripted fills and income: open, increase, reduce, flip, close; funding paid and received."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from monitoring.history import position_changes, position_legs
from monitoring.records import fill_row, income_row
from monitoring.store import as_frame

D = Decimal
H = 3_600_000
T0 = 1_798_761_600_000


def fill(trade_id: int, order_id: int, t: int, side: str, qty: str, price: str, fee: str, pnl: str = "0") -> dict:
    return fill_row(
        {
            "id": trade_id,
            "orderId": order_id,
            "time": t,
            "symbol": "BTCUSDT",
            "side": side,
            "positionSide": "BOTH",
            "price": price,
            "qty": qty,
            "quoteQty": str(D(price) * D(qty)),
            "commission": fee,
            "commissionAsset": "USDT",
            "realizedPnl": pnl,
            "maker": False,
        }
    )


def funding(tran_id: int, t: int, amount: str) -> dict:
    return income_row(
        {"tranId": tran_id, "time": t, "symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": amount}
    )


FILLS = as_frame(
    "fills",
    [
        fill(1, 10, T0, "BUY", "0.6", "100", "0.024"),
        fill(2, 10, T0, "BUY", "0.4", "101", "0.01616"),  # same order: one change at the order's VWAP
        fill(3, 11, T0 + H, "BUY", "1", "110", "0.044"),
        fill(4, 12, T0 + 2 * H, "SELL", "0.5", "120", "0.024", "7.3"),
        fill(5, 13, T0 + 3 * H, "SELL", "2.5", "130", "0.13", "25.5"),  # long 1.5 -> short 1: a flip
        fill(6, 14, T0 + 5 * H, "BUY", "1", "125", "0.05", "5"),
    ],
)
INCOME = as_frame(
    "income",
    [funding(100, T0 + H + 10, "-0.3"), funding(101, T0 + 4 * H, "0.2"), funding(102, T0 + 4 * H + 1, "0.05")],
)


def test_every_change_with_entry_exit_pnl_fees_funding_and_holding_time() -> None:
    changes = position_changes(FILLS, INCOME)
    assert changes["action"].to_list() == ["open", "increase", "reduce", "flip", "close"]
    rows = changes.to_dicts()
    open_, increase, reduce, flip, close = rows
    assert open_["qty"] == D("1") and open_["price"] == D("100.4") and open_["avg_entry_after"] == D("100.4")
    assert open_["fee"] == D("0.04016") and open_["exit_price"] is None
    assert increase["avg_entry_after"] == D("105.2") and increase["position_after"] == D("2")
    assert increase["funding"] == D("-0.3")  # paid while 2 BTC long
    assert reduce["exit_price"] == D("120") and reduce["avg_entry_after"] == D("105.2")
    assert reduce["realized_pnl"] == D("7.3") and reduce["holding_ms"] == 2 * H
    assert flip["position_before"] == D("1.5") and flip["position_after"] == D("-1")
    assert flip["avg_entry_after"] == D("130") and flip["exit_price"] == D("130") and flip["holding_ms"] == 3 * H
    assert flip["funding"] == D("0.25")  # received while short
    assert close["position_after"] == D("0") and close["opened_ms"] == T0 + 3 * H and close["holding_ms"] == 2 * H
    assert changes["leg"].to_list() == [1, 1, 1, 2, 2]


def test_legs_split_a_flip_between_the_leg_it_closes_and_the_one_it_opens() -> None:
    legs = position_legs(FILLS, INCOME).to_dicts()
    long, short = legs
    assert (long["direction"], short["direction"]) == ("LONG", "SHORT")
    assert long["max_qty"] == D("2") and long["avg_entry"] == D("105.2")
    assert long["avg_exit"] == (D("0.5") * 120 + D("1.5") * 130) / 2
    assert long["realized_pnl"] == D("32.8") and long["funding"] == D("-0.3")
    assert long["fee"] == D("0.04016") + D("0.044") + D("0.024") + D("0.13") * D("1.5") / D("2.5")
    assert long["opened_ms"] == T0 and long["closed_ms"] == T0 + 3 * H and long["holding_ms"] == 3 * H
    assert short["avg_entry"] == D("130") and short["avg_exit"] == D("125") and short["max_qty"] == D("1")
    assert short["fee"] == D("0.13") * D("1") / D("2.5") + D("0.05") and short["funding"] == D("0.25")
    assert short["holding_ms"] == 2 * H
    every_fee = sum(FILLS["commission"].to_list(), D(0))
    assert long["fee"] + short["fee"] == every_fee  # nothing lost in the split


def test_an_open_position_has_no_closed_time_and_no_fills_no_rows() -> None:
    legs = position_legs(FILLS.head(3), INCOME)
    assert legs.height == 1 and legs["closed_ms"][0] is None and legs["holding_ms"][0] is None
    empty = FILLS.clear()
    assert position_changes(empty, INCOME).height == 0 and position_legs(empty, INCOME).height == 0
    assert isinstance(position_changes(empty, INCOME), pl.DataFrame)
