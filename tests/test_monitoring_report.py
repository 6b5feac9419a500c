"""The strategy report on scripted fills, income, snapshots and target files written by the sizing step."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from executors.router import client_order_id
from factors.sizing import TargetPosition, write_account_targets
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS
from monitoring.records import fill_row, income_row, order_from_event, position_rows, snapshot_row
from monitoring.report import account_report
from monitoring.store import AccountStore, as_frame
from monitoring.targets import read_targets

D = Decimal
H = 3_600_000
W0 = 1_798_761_600_000  # 2027-01-01 00:00, the first window; its targets are decided at W0 + 5 min
T0 = W0 + WINDOW_MS
T1 = T0 + WINDOW_MS


def _target(symbol: str, qty: str, price: str) -> TargetPosition:
    return TargetPosition(symbol, D(qty), D(qty) * D(price), D(price))


def _snapshot(store: AccountStore, t: int, btc: str, mark: str, entry: str = "0", upnl: str = "0") -> None:
    risk = [{"symbol": "BTCUSDT", "positionAmt": btc, "entryPrice": entry, "markPrice": mark,
             "notional": str(D(btc) * D(mark)), "unRealizedProfit": upnl}]  # fmt: skip
    account = {"totalWalletBalance": "10000", "totalUnrealizedProfit": upnl, "availableBalance": "9000"}
    store.append("snapshots", as_frame("snapshots", [snapshot_row(account, t)]))
    store.append("positions", as_frame("positions", position_rows(risk, {"BTCUSDT": D(mark)}, t)))


def _income(tran_id: int, t: int, kind: str, amount: str, trade_id: str = "") -> dict:
    return income_row({"tranId": tran_id, "time": t, "symbol": "BTCUSDT", "incomeType": kind, "income": amount,
                       "tradeId": trade_id})  # fmt: skip


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    paths = DataPaths(tmp_path)
    capital = D("10000")
    write_account_targets(paths, "acc", W0, capital, [_target("BTCUSDT", "1", "100"), _target("ETHUSDT", "0", "10")])
    write_account_targets(paths, "acc", W0 + WINDOW_MS, capital, [_target("BTCUSDT", "1", "104")])
    store = AccountStore(paths, "acc")
    _snapshot(store, T0 + 5_000, "0", "100.5")  # the arrival mark, before the window's fill
    store.append(
        "fills",
        as_frame("fills", [fill_row({"id": 7, "orderId": 70, "time": T0 + 10_000, "symbol": "BTCUSDT", "side": "BUY",
                                     "price": "101", "qty": "1", "quoteQty": "101", "commission": "0.0404"})]),
    )  # fmt: skip
    store.append(
        "income",
        as_frame(
            "income",
            [
                _income(1, T0 - H, "TRANSFER", "10000") | {"symbol": ""},
                _income(2, T0 + 10_000, "COMMISSION", "-0.0404", "7"),
                _income(3, T0 + H, "FUNDING_FEE", "-0.01"),
                _income(4, T0 + 2 * H, "FUNDING_FEE", "0.02"),
                _income(5, T0 + 2 * H, "INSURANCE_CLEAR", "0.001") | {"symbol": ""},
            ],
        ),
    )
    _snapshot(store, T0 + 3 * H, "1", "105", entry="101", upnl="4")
    return paths


def test_costs_and_pnl_come_from_the_fills_and_income(paths: DataPaths) -> None:
    report = account_report(paths, "acc", T0, T0 + 4 * H)
    btc = report.by_symbol.row(0, named=True)
    assert btc["symbol"] == "BTCUSDT" and btc["fills"] == 1 and btc["turnover"] == D("101")
    assert btc["fees"] == D("0.0404") and btc["funding_paid"] == D("0.01") and btc["funding_received"] == D("0.02")
    assert btc["funding"] == D("0.01") and btc["unrealized_change"] == D("4") and btc["price_pnl"] == D("4")
    assert btc["total_pnl"] == D("4") + D("0.01") - D("0.0404")
    totals = report.totals
    assert D(totals["fees"]) == D("0.0404") and D(totals["funding"]) == D("0.01")
    assert D(totals["other_income"]) == D("0.001") and D(totals["transfers"]) == D("0")  # the deposit is earlier
    assert D(totals["total_pnl"]) == D("4") + D("0.01") - D("0.0404") + D("0.001")
    assert report.daily.height == 1
    day = report.daily.row(0, named=True)
    assert day["day"] == "2027-01-01" and day["fees"] == D("0.0404") and day["total_pnl"] == D(totals["total_pnl"])


def test_implementation_shortfall_against_decision_and_arrival_prices(paths: DataPaths) -> None:
    report = account_report(paths, "acc", T0, T0 + 4 * H)
    window = report.windows.row(0, named=True)
    assert report.windows.height == 1 and window["window_ms"] == T0 and window["symbol"] == "BTCUSDT"
    assert window["decision_price"] == 100 and window["arrival_price"] == 100.5
    assert window["shortfall_decision"] == pytest.approx(1.0)  # bought 1 at 101, decided at 100: 1 USDT of cost
    assert window["shortfall_decision_bps"] == pytest.approx(100.0)
    assert window["shortfall_arrival"] == pytest.approx(0.5)
    assert window["shortfall_arrival_bps"] == pytest.approx(0.5 / 100.5 * 1e4)
    assert report.totals["shortfall_decision_bps"] == pytest.approx(1 / 101 * 1e4)  # of what was filled


def test_a_late_fill_belongs_to_the_window_its_order_was_sent_for(paths: DataPaths) -> None:
    """A TWAP of T0's targets still filling after T1's were decided is measured against T0's decision price (its
    client order id names the window); a fill of an order the log does not hold goes by time."""
    store = AccountStore(paths, "acc")
    late, unknown = T1 + 20_000, T1 + 30_000
    cid = client_order_id("acc", W0, "BTCUSDT", "OB", 3)
    order = {"s": "BTCUSDT", "i": 71, "c": cid, "T": late, "S": "BUY", "o": "MARKET", "x": "TRADE"}
    store.append("orders", as_frame("orders", [order_from_event(order)]))
    store.append(
        "fills",
        as_frame("fills", [fill_row({"id": 8, "orderId": 71, "time": late, "symbol": "BTCUSDT", "side": "BUY",
                                     "price": "102", "qty": "1", "quoteQty": "102", "commission": "0"}),
                           fill_row({"id": 9, "orderId": 72, "time": unknown, "symbol": "BTCUSDT", "side": "SELL",
                                     "price": "103", "qty": "1", "quoteQty": "103", "commission": "0"})]),
    )  # fmt: skip
    windows = {r["window_ms"]: r for r in account_report(paths, "acc", T0, T0 + 4 * H).windows.to_dicts()}
    assert (windows[T0]["fills"], windows[T0]["decision_price"]) == (2, 100)
    assert windows[T0]["shortfall_decision"] == pytest.approx(1.0 + 2.0)  # bought at 101 and 102, decided at 100
    assert (windows[T1]["fills"], windows[T1]["decision_price"]) == (1, 104)
    assert windows[T1]["shortfall_decision"] == pytest.approx(1.0)  # sold at 103, decided at 104


def test_tracking_error_and_the_outputs(paths: DataPaths, tmp_path: Path) -> None:
    report = account_report(paths, "acc", T0, T0 + 4 * H)
    deviation = report.window_deviation.to_dicts()
    # Window 1 ended flat against a 1 BTC target (ETH's target of 0 adds nothing); window 2 ended on target.
    assert [d["window_ms"] for d in deviation] == [T0, T1]
    assert deviation[0]["deviation_notional"] == pytest.approx(100.5) and deviation[0]["deviation_share"] == 1.0
    assert deviation[1]["deviation_share"] == 0.0
    assert report.totals["tracking_error"] == pytest.approx((0.5) ** 0.5)
    written = report.write(tmp_path / "out")
    doc = json.loads(written[0].read_text())
    assert doc["totals"]["fees"] == "0.0404000000" and doc["by_symbol"][0]["turnover"] == "101.0000000000"
    rows = list(csv.DictReader((tmp_path / "out" / "windows.csv").open()))
    assert rows[0]["symbol"] == "BTCUSDT" and float(rows[0]["shortfall_decision"]) == pytest.approx(1.0)


def test_an_empty_range_is_refused_and_a_quiet_one_is_zero(paths: DataPaths) -> None:
    with pytest.raises(ValueError, match="empty report range"):
        account_report(paths, "acc", T0, T0)
    quiet = account_report(paths, "acc", T0 + 10 * 24 * H, T0 + 11 * 24 * H)
    assert D(quiet.totals["fees"]) == 0 and quiet.windows.height == 0 and quiet.totals["tracking_error"] is None


def test_account_view_curve_and_history_read_the_store(paths: DataPaths) -> None:
    from monitoring.state import account_curve, account_history, account_view, update_equity_curve

    view = account_view(paths, "acc")
    assert view is not None and view.snapshot["time_ms"] == T0 + 3 * H
    assert view.target_ms == T1 and view.deviation is not None and view.deviation.deviation_notional == 0
    assert view.exposure.gross == 105.0 and view.exposure.leverage == pytest.approx(105 / 10_004)
    meta = view.metadata()
    assert meta["equity"] == 10_004.0 and meta["gross"] == 105.0 and meta["deviation"] == 0.0
    assert json.loads(json.dumps(view.as_dict()))["snapshot"]["equity"] == "10004.0000000000"
    assert account_curve(paths, "acc")[0].height == 0  # the watcher writes the curve
    assert update_equity_curve(paths, "acc", T0 + 4 * H) == 2
    assert update_equity_curve(paths, "acc", T0 + 4 * H) == 0  # appendable: nothing twice
    curve, summary = account_curve(paths, "acc")
    assert curve["equity"].to_list() == [10_000.0, 10_004.0] and summary["transfers"] == 0.0
    assert summary["cum_return"] == pytest.approx(0.0004)  # the opening deposit is not a return
    changes, legs = account_history(paths, "acc")
    assert changes["action"].to_list() == ["open"] and legs["closed_ms"].to_list() == [None]
    assert account_view(paths, "nobody") is None


def test_a_broken_target_file_is_skipped_not_fatal(paths: DataPaths) -> None:
    (paths.positions / "acc_target_positions_20270101_001500.json").write_text("{not json")
    report = account_report(paths, "acc", T0, T0 + 4 * H)
    assert [d["window_ms"] for d in report.window_deviation.to_dicts()] == [T0, T1]


def test_targets_are_read_through_a_day_index_that_follows_the_files(
    paths: DataPaths, caplog: pytest.LogCaptureFixture
) -> None:
    """The index is built on the first read and used after; an added, rewritten, removed, broken or empty file
    shows up in the next read as it would parsing every file, and a damaged index is rebuilt."""
    index = paths.monitoring_account("acc") / "targets" / "2027-01-01.parquet"
    first = read_targets(paths, "acc", W0, W0 + 24 * H)
    assert index.exists() and first["window_ms"].to_list() == [T0, T0, T1]
    assert first.filter(pl.col("window_ms") == T1)["price"].to_list() == [D("104")]
    built = index.stat().st_mtime_ns
    assert read_targets(paths, "acc", W0, W0 + 24 * H).equals(first) and index.stat().st_mtime_ns == built

    capital = D("10000")
    write_account_targets(paths, "acc", T1, capital, [])  # decided at T1 + 5 min, no symbol: a null-symbol row
    write_account_targets(paths, "acc", T0, capital, [_target("BTCUSDT", "2", "105")])  # the T1 file rewritten
    (paths.positions / "acc_target_positions_20270101_000500.json").unlink()  # the T0 file removed
    (paths.positions / "acc_target_positions_20270101_002500.json").write_text("{not json")
    write_account_targets(paths, "acc", W0 + 24 * H, capital, [_target("BTCUSDT", "3", "1")])  # the next day
    caplog.set_level("WARNING")
    now = read_targets(paths, "acc", W0, W0 + 24 * H)
    assert now.select("window_ms", "symbol", "target_position").rows() == [
        (T1, "BTCUSDT", D("2")),
        (T1 + WINDOW_MS, None, None),
    ]
    assert ["not a target file" in r.getMessage() for r in caplog.records] == [True]
    assert read_targets(paths, "acc", T1 + WINDOW_MS, None)["target_position"].to_list() == [None, D("3")]
    assert read_targets(paths, "acc", W0, T1)["window_ms"].to_list() == []  # the range is by decision time

    index.write_bytes(b"not parquet")
    assert read_targets(paths, "acc", W0, W0 + 24 * H).equals(now)


def test_lsq_report_prints_json_and_writes_csv(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lsq.cli import main

    monkeypatch.setenv("LSQ_DATA_DIR", str(paths.root))
    assert main(["report", "acc", "--day", "2027-01-01", "--out", str(tmp_path / "rep")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["fees"] == "0.0404000000" and doc["start_ms"] == W0
    assert (tmp_path / "rep" / "by_symbol.csv").read_text().startswith("symbol,fills,turnover,fees")
    assert main(["report", "nobody", "--day", "2027-01-01"]) == 2
    assert "nothing stored for account 'nobody'" in capsys.readouterr().err
    assert main(["report", "acc", "--start", "2027-01-02", "--end", "2027-01-01"]) == 2
