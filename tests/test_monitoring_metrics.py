"""Deviation, exposure and health on scripted snapshots: notional at mark, targets of 0, empty books."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from monitoring.metrics import deviation_by_symbol, deviation_summary, equity, exposure, health

D = Decimal


def positions(*rows: tuple[str, float, float]) -> pl.DataFrame:
    schema = {"symbol": pl.String, "position_amt": pl.Float64, "mark_price": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def targets(*rows: tuple[str, float, float]) -> pl.DataFrame:
    schema = {"symbol": pl.String, "target_position": pl.Float64, "price": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_deviation_is_notional_at_mark_and_a_share_of_the_target_gross() -> None:
    held = positions(("BTCUSDT", 0.5, 40_000.0), ("ETHUSDT", -2.0, 2_000.0), ("XRPUSDT", 100.0, 0.5))
    wanted = targets(("BTCUSDT", 0.4, 39_000.0), ("ETHUSDT", -2.0, 2_100.0), ("SOLUSDT", 10.0, 100.0))
    rows = {r["symbol"]: r for r in deviation_by_symbol(held, wanted).iter_rows(named=True)}
    assert rows["BTCUSDT"]["deviation_notional"] == pytest.approx(0.1 * 40_000)  # at the mark, not the decision price
    assert rows["ETHUSDT"]["deviation_notional"] == 0
    assert rows["XRPUSDT"]["target"] == 0 and rows["XRPUSDT"]["deviation_notional"] == pytest.approx(50.0)
    assert rows["SOLUSDT"]["deviation_notional"] == pytest.approx(1_000.0)  # no mark: valued at the decision price
    gross = 0.4 * 40_000 + 2 * 2_000 + 10 * 100
    assert rows["XRPUSDT"]["share_of_target_gross"] == pytest.approx(50.0 / gross)  # a target of 0 is not 100 %
    summary = deviation_summary(deviation_by_symbol(held, wanted))
    assert summary.deviation_notional == pytest.approx(4_000 + 50 + 1_000)
    assert summary.target_gross_notional == pytest.approx(gross)
    assert summary.share == pytest.approx(5_050 / gross)
    assert summary.largest_symbol == "BTCUSDT"


def test_all_targets_zero_gives_notional_and_no_share() -> None:
    held = positions(("BTCUSDT", 0.1, 40_000.0))
    summary = deviation_summary(deviation_by_symbol(held, targets(("BTCUSDT", 0.0, 40_000.0))))
    assert summary.deviation_notional == pytest.approx(4_000.0) and summary.share is None
    flat = deviation_summary(deviation_by_symbol(positions(), targets(("BTCUSDT", 0.0, 40_000.0))))
    assert flat.deviation_notional == 0 and flat.share == 0.0 and flat.largest_symbol is None


def test_exposure_at_mark_with_largest_share_and_leverage() -> None:
    book = positions(("BTCUSDT", 0.5, 40_000.0), ("ETHUSDT", -4.0, 2_000.0), ("XRPUSDT", 0.0, 0.5))
    e = exposure(book, D("40000"))
    assert (e.long, e.short, e.gross, e.net) == (20_000.0, 8_000.0, 28_000.0, 12_000.0)
    assert e.largest_symbol == "BTCUSDT" and e.largest_share == pytest.approx(20 / 28)
    assert e.leverage == pytest.approx(0.7) and e.positions == 2
    empty = exposure(positions(), D("0"))
    assert empty.gross == 0 and empty.largest_share is None and empty.leverage is None


def test_health_is_binance_margin_ratio_of_the_margin_balance() -> None:
    assert equity(D("1000"), D("-50")) == D("950")
    h = health(wallet_balance=D("1000"), unrealized_pnl=D("-50"), maint_margin=D("19"), available_balance=D("475"))
    assert h.margin_balance == D("950")
    assert h.margin_ratio == pytest.approx(0.02) and h.available_share == pytest.approx(0.5)
    assert h.unrealized_pnl_share == pytest.approx(-50 / 950)
    gone = health(D("100"), D("-100"), D("10"), D("0"))
    assert gone.margin_ratio is None and gone.as_dict()["margin_balance"] == "0"


def test_hedge_mode_sides_net_out_against_one_target() -> None:
    held = positions(("BTCUSDT", 0.5, 40_000.0), ("BTCUSDT", -0.2, 40_000.0))
    rows = deviation_by_symbol(held, targets(("BTCUSDT", 0.3, 39_000.0))).to_dicts()
    assert len(rows) == 1 and rows[0]["current"] == pytest.approx(0.3) and rows[0]["deviation_notional"] < 1e-6
    assert exposure(held, D("10000")).gross == pytest.approx(28_000.0)  # both legs are exposure
