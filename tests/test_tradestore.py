"""The trade store: exact decimals, hour splitting, dedupe across parts and hour files, crash-safe compaction."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from lsq.paths import DataPaths, atomic_write_bytes
from lsq.schema import TRADE_SCHEMA
from lsq.tradestore import TradeStore, TradeStoreError, id_gaps_of

H0 = 1_785_024_000_000  # 2026-07-26 00:00 UTC, an hour boundary
HOUR = 3_600_000


def trades(ids: range | list[int], t0: int = H0, step_ms: int = 1000) -> pl.DataFrame:
    ids = list(ids)
    return pl.DataFrame(
        {
            "agg_trade_id": ids,
            "price": [f"{30000 + i % 97}.{i % 100:02d}123456" for i in ids],
            "quantity": ["0.00000001" if i % 2 else "123456789.12345678" for i in ids],
            "first_trade_id": [i * 3 for i in ids],
            "last_trade_id": [i * 3 + 2 for i in ids],
            "transact_time": [t0 + (i - ids[0]) * step_ms for i in ids],
            "is_buyer_maker": [i % 3 == 0 for i in ids],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> TradeStore:
    return TradeStore(DataPaths(tmp_path))


def test_reads_equal_writes_exactly(store: TradeStore) -> None:
    df = trades(range(100, 200))
    store.write_part("btcusdt", df)
    out = store.scan("BTCUSDT", H0, H0 + HOUR).collect()
    assert out.schema == pl.Schema(TRADE_SCHEMA)
    assert out.equals(df.cast(TRADE_SCHEMA))  # type: ignore[arg-type]
    assert out["quantity"].to_list()[:2] == [Decimal("123456789.12345678"), Decimal("0.00000001")]
    assert out["quantity"].sum() == Decimal("50") * Decimal("123456789.12345678") + Decimal("50") * Decimal(
        "0.00000001"
    )


def test_parts_split_by_utc_hour_and_scan_filters_half_open(store: TradeStore, tmp_path: Path) -> None:
    df = trades(range(0, 7200), t0=H0 + HOUR // 2)  # 2 hours of 1 trade/s starting mid-hour: spans 3 hours
    paths = store.write_part("ETHUSDT", df)
    assert len(paths) == 3
    assert {p.parent.name for p in paths} == {"2026-07-26-00h", "2026-07-26-01h", "2026-07-26-02h"}
    assert store.hours("ETHUSDT") == [H0, H0 + HOUR, H0 + 2 * HOUR]
    window = store.scan("ETHUSDT", H0 + HOUR, H0 + HOUR + 300_000).collect()
    assert window["transact_time"].min() == H0 + HOUR
    assert window["transact_time"].max() == H0 + HOUR + 299_000
    assert window.height == 300


def test_dedupe_across_parts_and_hour_file(store: TradeStore) -> None:
    store.write_part("BTCUSDT", trades(range(1, 51)))
    store.compact_hour("BTCUSDT", H0)
    store.write_part("BTCUSDT", trades(range(40, 81), t0=H0 + 39_000))
    store.write_part("BTCUSDT", trades(range(70, 101), t0=H0 + 69_000))
    out = store.scan("BTCUSDT", H0, H0 + HOUR).collect()
    assert out["agg_trade_id"].to_list() == list(range(1, 101))
    assert store.id_gaps("BTCUSDT", H0, H0 + HOUR) == []
    assert store.last_id("BTCUSDT") == 100


def test_compaction_merges_deletes_parts_and_is_idempotent(store: TradeStore, tmp_path: Path) -> None:
    store.write_part("BTCUSDT", trades(range(1, 11)))
    store.write_part("BTCUSDT", trades(range(11, 21), t0=H0 + 10_000))
    before = store.scan("BTCUSDT", H0, H0 + HOUR).collect()
    hour_file = store.compact_hour("BTCUSDT", H0)
    assert hour_file is not None and hour_file.exists()
    assert not store.paths.trade_parts_dir("BTCUSDT", H0).exists()
    first_bytes = hour_file.read_bytes()
    assert store.compact_hour("BTCUSDT", H0) == hour_file
    assert hour_file.read_bytes() == first_bytes
    assert store.scan("BTCUSDT", H0, H0 + HOUR).collect().equals(before)
    assert pl.read_parquet(hour_file)["agg_trade_id"].is_sorted()


def test_merge_into_hours_writes_hour_files_merged_with_what_the_hour_holds(store: TradeStore) -> None:
    fresh = store.merge_into_hours("BTCUSDT", trades(range(1, 7201), t0=H0 + HOUR // 2))  # 3 hours, none stored yet
    assert [p.name for p in fresh] == ["2026-07-26-00h.parquet", "2026-07-26-01h.parquet", "2026-07-26-02h.parquet"]
    assert not (store.paths.symbol_trades("BTCUSDT") / "parts").exists()
    # an hour holding a compacted file and a part: the merge keeps one copy of every trade and deletes the part
    store.write_part("ETHUSDT", trades(range(1, 31)))
    store.compact_hour("ETHUSDT", H0)
    store.write_part("ETHUSDT", trades(range(25, 41), t0=H0 + 24_000))
    unordered = trades(range(35, 61), t0=H0 + 34_000).reverse()
    (hour_file,) = store.merge_into_hours("ETHUSDT", unordered)
    assert pl.read_parquet(hour_file)["agg_trade_id"].to_list() == list(range(1, 61))
    assert not store.paths.trade_parts_dir("ETHUSDT", H0).exists()
    assert store.scan("ETHUSDT", H0, H0 + HOUR).collect().equals(trades(range(1, 61)).cast(TRADE_SCHEMA))  # type: ignore[arg-type]


def test_crash_between_hour_replace_and_part_delete_shows_no_duplicates(store: TradeStore) -> None:
    store.write_part("BTCUSDT", trades(range(1, 31)))
    parts = list(store.paths.trade_parts_dir("BTCUSDT", H0).glob("*.parquet"))
    saved = {p: p.read_bytes() for p in parts}
    store.compact_hour("BTCUSDT", H0)
    for p, data in saved.items():  # as if the process died before deleting the merged parts
        atomic_write_bytes(p, data)
    assert store.scan("BTCUSDT", H0, H0 + HOUR).collect()["agg_trade_id"].to_list() == list(range(1, 31))
    store.compact_hour("BTCUSDT", H0)
    assert store.scan("BTCUSDT", H0, H0 + HOUR).collect().height == 30


def test_leftover_tmp_files_are_ignored(store: TradeStore) -> None:
    store.write_part("BTCUSDT", trades(range(1, 11)))
    parts_dir = store.paths.trade_parts_dir("BTCUSDT", H0)
    (parts_dir / ".11-20-dead.parquet.x1y2.tmp").write_bytes(b"PAR1 half a file")
    hour_tmp = store.paths.trade_hour_file("BTCUSDT", H0).with_name(".2026-07-26-00h.parquet.zz.tmp")
    hour_tmp.write_bytes(b"garbage")
    assert store.scan("BTCUSDT", H0, H0 + HOUR).collect().height == 10
    assert store.last_id("BTCUSDT") == 10
    store.compact_hour("BTCUSDT", H0)
    assert store.scan("BTCUSDT", H0, H0 + HOUR).collect().height == 10


def test_write_part_never_rewrites_an_hour_file(store: TradeStore) -> None:
    store.write_part("BTCUSDT", trades(range(1, 11)))
    hour_file = store.compact_hour("BTCUSDT", H0)
    assert hour_file is not None
    stat = hour_file.stat()
    store.write_part("BTCUSDT", trades(range(11, 21), t0=H0 + 10_000))
    assert hour_file.stat().st_mtime_ns == stat.st_mtime_ns and hour_file.stat().st_ino == stat.st_ino


def test_last_id_last_trade_symbols_and_gaps(store: TradeStore) -> None:
    assert store.last_id("BTCUSDT") is None and store.last_trade("BTCUSDT") is None and store.symbols() == []
    store.write_part("BTCUSDT", trades([*range(1, 11), *range(15, 21), 30]))
    store.compact_hour("BTCUSDT", H0)
    store.write_part("BTCUSDT", trades(range(31, 41), t0=H0 + HOUR + 5_000))
    store.write_part("SOLUSDT", trades(range(7, 9)))
    assert store.symbols() == ["BTCUSDT", "SOLUSDT"]
    assert store.last_id("BTCUSDT") == 40
    last = store.last_trade("BTCUSDT")
    assert last is not None and last["agg_trade_id"] == 40 and isinstance(last["price"], Decimal)
    assert store.id_gaps("BTCUSDT", H0, H0 + 2 * HOUR) == [(11, 14), (21, 29)]
    store.compact_hour("BTCUSDT", H0 + HOUR)
    assert store.last_id("BTCUSDT") == 40


def test_scan_many_adds_symbol_column(store: TradeStore) -> None:
    store.write_part("BTCUSDT", trades(range(1, 4)))
    store.write_part("ETHUSDT", trades(range(10, 12)))
    out = store.scan_many(["BTCUSDT", "ETHUSDT"], H0, H0 + HOUR).collect()
    assert out.columns == ["symbol", *TRADE_SCHEMA]
    assert out.group_by("symbol").len().sort("symbol").rows() == [("BTCUSDT", 3), ("ETHUSDT", 2)]
    assert store.scan_many([], H0, H0 + HOUR).collect().is_empty()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop("price"), "missing ['price']"),
        (lambda df: df.with_columns(extra=pl.lit(1)), "unexpected ['extra']"),
        (lambda df: df.with_columns(pl.col("price").cast(pl.Float64)), "floats are inexact"),
        (lambda df: df.with_columns(agg_trade_id=pl.lit("x")), "do not fit"),
        (lambda df: df.with_columns(transact_time=pl.lit(None, pl.Int64)), "nulls in ['transact_time']"),
    ],
)
def test_bad_frames_are_refused_with_a_clear_error(store: TradeStore, mutate, message: str) -> None:
    with pytest.raises(TradeStoreError, match=message.replace("[", r"\[").replace("]", r"\]")):
        store.write_part("BTCUSDT", mutate(trades(range(1, 5))))
    assert store.symbols() == []


def test_bad_symbol_is_refused(store: TradeStore) -> None:
    with pytest.raises(TradeStoreError, match="bad symbol"):
        store.write_part("../etc", trades(range(1, 3)))


def test_reader_never_sees_a_hole_during_concurrent_compaction(store: TradeStore) -> None:
    """A reader racing compactions always sees every trade written so far, exactly once.

    The writer waits for a read between its rounds, so the reader provably runs during the writing, however the
    machine schedules the threads; what the reads overlap (a write, a compaction) is left to the race.
    """
    rounds, per_round = 60, 50
    written = [0]
    reads = [0]

    def writer() -> None:
        for i in range(rounds):
            seen = reads[0]
            first = i * per_round + 1
            store.write_part("BTCUSDT", trades(range(first, first + per_round), t0=H0 + first * 1000))
            written[0] = first + per_round - 1
            store.compact_hour("BTCUSDT", H0)
            deadline = time.monotonic() + 30
            while reads[0] == seen and time.monotonic() < deadline:
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while thread.is_alive():
            before = written[0]
            ids = store.scan("BTCUSDT", H0, H0 + HOUR).collect()["agg_trade_id"]
            assert ids.n_unique() == ids.len(), "a trade was read twice"
            assert ids.len() >= before, f"a scan saw {ids.len()} of {before} trades"
            assert ids.to_list() == list(range(1, ids.len() + 1)), "a scan saw a hole"
            reads[0] += 1
    finally:
        thread.join()
    assert reads[0] >= rounds
    final = store.scan("BTCUSDT", H0, H0 + HOUR).collect()["agg_trade_id"]
    assert final.to_list() == list(range(1, rounds * per_round + 1))


def test_id_gaps_of() -> None:
    assert id_gaps_of(pl.Series([1, 2, 5, 9], dtype=pl.Int64)) == [(3, 4), (6, 8)]
    assert id_gaps_of(pl.Series([], dtype=pl.Int64)) == []
    assert id_gaps_of(pl.Series([4, 5, 6, 7], dtype=pl.Int64)) == []
    # as many ids as the span, but a repeat hides a hole; unsorted ids are sorted first
    assert id_gaps_of(pl.Series([1, 2, 2, 4], dtype=pl.Int64)) == [(3, 3)]
    assert id_gaps_of(pl.Series([4, 1, 3, 2], dtype=pl.Int64)) == []
