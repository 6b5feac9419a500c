"""Day-file storage of panels: replace-by-range writes, atomic swaps under a lock, ordered reads, clear errors."""

import threading
from pathlib import Path

import polars as pl
import pytest

from lsq.paths import DataPaths
from lsq.stores.panels import day_file, load_panel, stored_days, write_panel
from lsq.timelabels import DAY_MS, WINDOW_MS

DAY = 20_000 * DAY_MS


def panel(symbols: list[str], start: int, end: int, value: float = 1.0) -> pl.DataFrame:
    times = pl.int_range(start, end, WINDOW_MS, dtype=pl.Int64, eager=True)
    return (
        pl.DataFrame({"symbol": symbols})
        .join(pl.DataFrame({"open_time": times}), how="cross")
        .with_columns(pl.lit(value).alias("close"))
    )


def test_write_replaces_exactly_its_range_and_reads_sorted_across_days(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    first = panel(["ETHUSDT", "BTCUSDT"], DAY - 2 * WINDOW_MS, DAY + 2 * WINDOW_MS)
    written = write_panel(paths, "bars", first, DAY - 2 * WINDOW_MS, DAY + 2 * WINDOW_MS)
    assert [p.name for p in written] == ["2024-10-03.parquet", "2024-10-04.parquet"]
    assert stored_days(paths, "bars") == ["2024-10-03", "2024-10-04"]
    # Rewrite one window with other values and without ETHUSDT: only that window changes.
    write_panel(paths, "bars", panel(["BTCUSDT"], DAY, DAY + WINDOW_MS, 2.0), DAY, DAY + WINDOW_MS)
    out = load_panel("bars", DAY - 2 * WINDOW_MS, DAY + 2 * WINDOW_MS, paths=paths)
    assert out["symbol"].to_list() == ["BTCUSDT"] * 4 + ["ETHUSDT"] * 3
    btc = out.filter(pl.col("symbol") == "BTCUSDT")
    assert btc["open_time"].to_list() == [DAY - 2 * WINDOW_MS, DAY - WINDOW_MS, DAY, DAY + WINDOW_MS]
    assert btc["close"].to_list() == [1.0, 1.0, 2.0, 1.0]
    inner = load_panel("bars", DAY - WINDOW_MS, DAY + WINDOW_MS, paths=paths, symbols=["ETHUSDT"])
    assert inner["open_time"].to_list() == [DAY - WINDOW_MS]


def test_rows_outside_the_range_and_bad_kinds_are_refused(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    with pytest.raises(ValueError, match="1 bars rows lie outside"):
        write_panel(paths, "bars", panel(["BTCUSDT"], DAY, DAY + 2 * WINDOW_MS), DAY, DAY + WINDOW_MS)
    with pytest.raises(ValueError, match="unknown panel kind 'candles'"):
        load_panel("candles", DAY, DAY + WINDOW_MS, paths=paths)
    with pytest.raises(ValueError, match="unknown period '2h'"):
        load_panel("bars", DAY, DAY + WINDOW_MS, period="2h", paths=paths)
    with pytest.raises(ValueError, match="lacks columns"):
        write_panel(paths, "funding", panel(["BTCUSDT"], DAY, DAY + WINDOW_MS), DAY, DAY + WINDOW_MS)
    write_panel(paths, "bars", panel(["BTCUSDT"], DAY, DAY + WINDOW_MS), DAY, DAY + WINDOW_MS)
    other = panel(["BTCUSDT"], DAY + WINDOW_MS, DAY + 2 * WINDOW_MS).with_columns(pl.col("close").cast(pl.Int64))
    with pytest.raises(ValueError, match="stored schema"):
        write_panel(paths, "bars", other, DAY + WINDOW_MS, DAY + 2 * WINDOW_MS)
    assert load_panel("bars", DAY - DAY_MS, DAY - 1, paths=paths).is_empty()


def test_concurrent_writers_of_one_day_lose_nothing(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            lo = DAY + i * WINDOW_MS
            write_panel(paths, "bars", panel(["BTCUSDT", "ETHUSDT"], lo, lo + WINDOW_MS), lo, lo + WINDOW_MS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    out = load_panel("bars", DAY, DAY + DAY_MS, paths=paths)
    assert out.height == 48
    assert not list(day_file(paths, "bars", DAY).parent.glob("*.tmp"))
