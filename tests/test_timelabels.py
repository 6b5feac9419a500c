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
