"""The account store on real parquet: appends merge and deduplicate, income is kept in full, reads by range."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS
from monitoring.records import income_row, snapshot_row
from monitoring.store import AccountStore, as_frame

T0 = 1_798_761_600_000  # 2027-01-01


def income(tran_id: int, t: int, kind: str, amount: str, symbol: str = "BTCUSDT") -> dict:
    return income_row(
        {"tranId": tran_id, "time": t, "symbol": symbol, "incomeType": kind, "income": amount, "tradeId": ""}
    )


def test_income_is_deduplicated_by_tran_id_and_kept_in_full(tmp_path: Path) -> None:
    store = AccountStore(DataPaths(tmp_path), "acc")
    first = [income(1, T0, "TRANSFER", "1000", ""), income(2, T0 + 5, "COMMISSION", "-0.12345678")]
    assert store.append("income", as_frame("income", first)) == 2
    again = [
        income(2, T0 + 5, "COMMISSION", "-0.12345678"),  # delivered twice
        income(3, T0 + 31 * DAY_MS, "FUNDING_FEE", "0.5"),  # next month's file
        income(3, T0 + 31 * DAY_MS, "FUNDING_FEE", "-0.25", "ETHUSDT"),  # Binance shares a tranId across symbols
    ]
    assert store.append("income", as_frame("income", again)) == 2
    stored = store.read("income")
    assert stored["tran_id"].to_list() == [1, 2, 3, 3]
    assert sum(stored["income"].to_list(), Decimal(0)) == Decimal("1000.12654322")  # exact
    assert sorted(p.name for p in (tmp_path / "monitoring" / "acc" / "income").iterdir()) == [
        "2027-01.parquet",
        "2027-02.parquet",
    ]  # no temporary file left behind
    assert store.read("income", T0 + DAY_MS)["tran_id"].to_list() == [3, 3]
    assert store.read("income", None, T0 + 5)["tran_id"].to_list() == [1]
    assert store.last_time("income") == T0 + 31 * DAY_MS


def test_latest_snapshot_and_status(tmp_path: Path) -> None:
    store = AccountStore(DataPaths(tmp_path), "acc")
    assert store.latest()[0] is None and store.read_status() is None
    account = {"totalWalletBalance": "1000", "totalUnrealizedProfit": "-12.5", "totalMaintMargin": "9.875",
               "availableBalance": "900", "totalInitialMargin": "80"}  # fmt: skip
    for t in (T0, T0 + 60_000):
        store.append("snapshots", as_frame("snapshots", [snapshot_row(account, t)]))
    snap, positions = store.latest()
    assert snap is not None and snap["time_ms"] == T0 + 60_000
    assert snap["equity"] == Decimal("987.5") and snap["margin_ratio"] == 0.01
    assert positions.height == 0
    store.write_status({"stream": "up"})
    assert store.read_status() == {"stream": "up"}
