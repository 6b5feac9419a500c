"""Window maths, labels and partition keys: the coordinates every stage shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lsq import symbols
from lsq import timelabels as tl


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_window_start_and_label_at_boundaries() -> None:
    t = ms(2024, 8, 8, 23, 55)
    assert tl.window_start(t + 299_999) == t
    assert tl.window_start(t + 300_000) == ms(2024, 8, 9)
    assert tl.time_label(t) == 288
    assert tl.time_label(ms(2024, 8, 9)) == 1
    assert tl.label_of(t + 1) == "2024-08-08-288"
    assert tl.time_label(ms(2024, 8, 9, 13, 0), tl.HOUR_MS) == 14


def test_label_round_trip_and_errors() -> None:
    for label in ("2024-08-08-001", "2024-08-08-150", "2024-08-08-288"):
        assert tl.label_of(tl.parse_label(label)) == label
    for bad in ("2024-08-08-000", "2024-08-08-289", "2024-08-08-12", "20240808-001", "2024-02-30-001"):
        with pytest.raises(ValueError, match="bad"):
            tl.parse_label(bad)


def test_partition_keys_round_trip() -> None:
    t = ms(2024, 8, 8, 23, 55)
    assert tl.partition_key(t + 10) == "2024-08-08-23:55"
    assert tl.parse_partition_key("2024-08-08-23:55") == t
    with pytest.raises(ValueError, match="5-minute boundary"):
        tl.parse_partition_key("2024-08-08-23:57")


def test_naive_datetimes_are_refused_and_aware_ones_converted() -> None:
    with pytest.raises(ValueError, match="naive"):
        tl.from_datetime(datetime(2024, 1, 1))
    shanghai = timezone(timedelta(hours=8))
    assert tl.from_datetime(datetime(2024, 1, 1, 8, tzinfo=shanghai)) == ms(2024, 1, 1)


def test_symbol_conversion() -> None:
    assert symbols.to_strategy("BTCUSDT") == "btc-usdt"
    assert symbols.to_strategy("1000SHIBUSDT") == "1000shib-usdt"
    assert symbols.to_exchange("btc-usdt") == "BTCUSDT"
    assert symbols.to_exchange("ETHUSDT") == "ETHUSDT"
    with pytest.raises(ValueError, match="quote asset"):
        symbols.to_strategy("BTCEUR")


def test_a_window_has_three_names_and_each_parses_to_its_start() -> None:
    """Partition key = start, label = index in the UTC day, positions stamp = end: one window, one parser."""
    start = ms(2026, 12, 1, 9, 5)
    assert tl.partition_key(start) == "2026-12-01-09:05"
    assert tl.label_of(start) == "2026-12-01-110"
    assert tl.positions_stamp(start) == "20261201_091000"
    for name in ("2026-12-01-09:05", "2026-12-01-110", "20261201_091000", "_20261201_091000", " 2026-12-01-110 "):
        assert tl.parse_window(name) == start, name
    assert tl.parse_window("20261202_000000") == ms(2026, 12, 1, 23, 55)  # the stamp of the day's last window
    for bad in ("2026-12-01", "2026-12-01-09:07", "20261201_091100", "2026-12-01-289", "yesterday", ""):
        with pytest.raises(ValueError, match="bad "):
            tl.parse_window(bad)


def test_periods_have_one_canonical_spelling() -> None:
    assert tl.PERIODS == ("5m", "1h", "4h", "8h", "12h", "24h")
    spellings = {
        "5m": "5m",
        "5min": "5m",
        "5M": "5m",
        "60min": "1h",
        "1H": "1h",
        "240m": "4h",
        "1d": "24h",
        "24h": "24h",
    }
    assert {text: tl.parse_period(text) for text in spellings} == spellings
    assert tl.period_ms("5min") == tl.WINDOW_MS and tl.period_ms("1d") == tl.DAY_MS
    for bad in ("2h", "1m", "5", "hourly", ""):
        with pytest.raises(ValueError, match="unknown period"):
            tl.parse_period(bad)
