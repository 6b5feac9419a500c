"""The equity curve on scripted snapshots and income: a deposit mid-curve is capital, not return."""

from __future__ import annotations

import itertools
import math
import statistics

import polars as pl
import pytest

from lsq.timelabels import DAY_MS, MINUTE_MS
from monitoring.equity import daily, equity_curve, in_range, summarize
from monitoring.records import income_row
from monitoring.store import as_frame

T0 = 1_798_761_600_000  # 2027-01-01 00:00 UTC


def snapshots(points: list[tuple[int, str]]) -> object:
    return as_frame("snapshots", [{"time_ms": t, "equity": e, "wallet_balance": e} for t, e in points])


def transfer(tran_id: int, t: int, amount: str) -> dict[str, object]:
    return income_row({"tranId": tran_id, "time": t, "incomeType": "TRANSFER", "income": amount, "asset": "USDT"})


def test_a_deposit_mid_curve_is_not_a_return() -> None:
    snaps = snapshots(
        [
            (T0 + 5_000, "1000"),
            (T0 + 20_000, "999"),  # same minute: the later snapshot is the minute's sample
            (T0 + MINUTE_MS + 5_000, "1010"),
            (T0 + 2 * MINUTE_MS + 5_000, "1510"),  # 500 deposited in between, no gain
            (T0 + 3 * MINUTE_MS + 5_000, "1530"),
            (T0 + 4 * MINUTE_MS + 5_000, "1490"),
        ]
    )
    income = as_frame("income", [transfer(1, T0, "1000"), transfer(2, T0 + 2 * MINUTE_MS, "500")])
    curve = equity_curve(snaps, income)
    assert curve["minute_ms"].to_list() == [T0 + i * MINUTE_MS for i in range(5)]
    assert curve["equity"].to_list() == [999.0, 1010.0, 1510.0, 1530.0, 1490.0]
    assert curve["flow"].to_list() == [1000.0, 0.0, 500.0, 0.0, 0.0]
    assert curve["pnl"].to_list() == pytest.approx([0.0, 11.0, 0.0, 20.0, -40.0])
    assert curve["ret"][2] == 0.0  # the deposit minute
    expected = (1010 / 999) * (1530 / 1510) * (1490 / 1530) - 1
    assert curve["cum_return"][-1] == pytest.approx(expected)
    assert curve["drawdown"][-1] == pytest.approx(1490 / 1530 - 1)
    s = summarize(curve)
    assert s.transfers == 500.0 and s.pnl == pytest.approx(-9.0) and s.cum_return == pytest.approx(expected)
    assert s.max_drawdown == pytest.approx(1490 / 1530 - 1) and s.sharpe is None  # one day: no Sharpe
    naive = 1490 / 999 - 1
    assert s.cum_return < 0 < naive  # counting the deposit would have reported a 49 % gain


def test_a_withdrawal_before_a_loss_and_a_range_rebased() -> None:
    snaps = snapshots([(T0, "2000"), (T0 + MINUTE_MS, "1000"), (T0 + 2 * MINUTE_MS, "900")])
    income = as_frame("income", [transfer(1, T0 - 1, "2000"), transfer(2, T0 + 30_000, "-1000")])
    curve = equity_curve(snaps, income)
    assert curve["ret"].to_list() == pytest.approx([0.0, 0.0, -0.1])
    part = in_range(curve, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS)
    assert part["cum_return"].to_list() == pytest.approx([0.0, -0.1]) and part["flow"][0] == 0.0
    assert summarize(curve, T0 + 10 * MINUTE_MS).samples == 0


def test_daily_pnl_sharpe_and_max_drawdown_over_days() -> None:
    equities = [1000.0, 1010.0, 1005.0, 1030.0, 1020.0]
    snaps = snapshots([(T0 + d * DAY_MS + h * 3_600_000, str(e)) for d, e in enumerate(equities) for h in (0, 12)])
    curve = equity_curve(snaps, as_frame("income", [transfer(1, T0 - 1, "1000")]))
    days = daily(curve)
    assert days["day"].to_list() == ["2027-01-01", "2027-01-02", "2027-01-03", "2027-01-04", "2027-01-05"]
    assert days["pnl"].to_list() == pytest.approx([0.0, 10.0, -5.0, 25.0, -10.0])
    rets = [b / a - 1 for a, b in itertools.pairwise(equities)]
    assert days["ret"].to_list()[1:] == pytest.approx(rets)
    s = summarize(curve)
    every_day = [0.0, *rets]
    assert s.sharpe == pytest.approx(statistics.mean(every_day) / statistics.stdev(every_day) * math.sqrt(365))
    assert s.max_drawdown == pytest.approx(1020 / 1030 - 1)  # deeper than 1005 / 1010


def test_a_curve_continued_from_its_last_row_equals_the_curve_at_once() -> None:
    points = [(T0 + i * MINUTE_MS + 1_000, str(1000 + 7 * i - (i % 3) * 11 + (500 if i >= 4 else 0))) for i in range(8)]
    income = as_frame("income", [transfer(1, T0, "1000"), transfer(2, T0 + 3 * MINUTE_MS + 30_000, "500")])
    whole = equity_curve(snapshots(points), income)
    head = equity_curve(snapshots(points[:3]), income)
    tail = equity_curve(snapshots(points), income, previous=head.row(-1, named=True))
    assert tail["minute_ms"][0] == T0 + 3 * MINUTE_MS and tail["flow"][0] == 0.0 and tail["flow"][1] == 500.0
    for column in ("equity", "flow", "pnl", "ret", "cum_return", "drawdown"):
        assert pl.concat([head, tail])[column].to_list() == pytest.approx(whole[column].to_list()), column
