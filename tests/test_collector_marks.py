"""The mark-price store: snapshots split into hourly parts named by their time range, read back exactly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from collectors.marks import MARK_SCHEMA, MarkStore, marks_frame
from collectors.parse import MarkPrice
from lsq.paths import DataPaths
from lsq.timelabels import HOUR_MS

HOUR = 1_795_485_600_000  # an hour start


def mark(symbol: str, event_time: int, price: str) -> MarkPrice:
    return MarkPrice(symbol, event_time, price, price, price, "0.0001", HOUR + 8 * HOUR_MS)


def test_no_rows_is_an_empty_typed_frame() -> None:
    assert marks_frame([]).schema == MARK_SCHEMA


def test_parts_are_split_by_hour_named_by_time_range_and_scanned_back(tmp_path: Path) -> None:
    store = MarkStore(DataPaths(tmp_path))
    rows = [
        mark("ETHUSDT", HOUR + 5_000, "2999.5"),
        mark("BTCUSDT", HOUR + 1_000, "50000.12"),
        mark("BTCUSDT", HOUR + HOUR_MS + 2_000, "50001"),
    ]
    parts = store.write_part(marks_frame(rows))
    assert sorted(p.name.rsplit("-", 1)[0] for p in parts) == [
        f"{HOUR + 1_000}-{HOUR + 5_000}",
        f"{HOUR + HOUR_MS + 2_000}-{HOUR + HOUR_MS + 2_000}",
    ]
    back = store.scan(HOUR, HOUR + 2 * HOUR_MS)
    assert back.select("symbol", "event_time", "mark_price").rows() == [
        ("BTCUSDT", HOUR + 1_000, Decimal("50000.12")),
        ("BTCUSDT", HOUR + HOUR_MS + 2_000, Decimal("50001")),
        ("ETHUSDT", HOUR + 5_000, Decimal("2999.5")),
    ]
