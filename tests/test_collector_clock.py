"""The collector's decisions on an injected FakeClock: when a window seals, when buffers are flushed, what the status
says about time. Frames go through the real parser and the real store; only time is fake, and it moves when the test
says so, so no test here waits for the wall clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from collectors.books import SymbolBook
from collectors.connection import StreamConnection
from collectors.daemon import Collector, CollectorOptions
from lsq.clock import FakeClock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS
from lsq.tradestore import TradeStore

T0 = 1_795_488_900_000  # a window start
END = T0 + WINDOW_MS
LAG_MS = 2_000


def trade_frame(symbol: str, agg_id: int, time_ms: int, event_ms: int) -> str:
    data = {
        "e": "aggTrade",
        "E": event_ms,
        "s": symbol,
        "a": agg_id,
        "p": "100.5",
        "q": "0.25",
        "f": 2 * agg_id,
        "l": 2 * agg_id,
        "T": time_ms,
        "m": True,
    }
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data})


def mark_frame(symbols: list[str], event_ms: int) -> str:
    """The mark-price array: the server-time heartbeat of its connection."""
    marks = [
        {"e": "markPriceUpdate", "E": event_ms, "s": s, "p": "1.5", "i": "1.4", "P": "1.45", "r": "0.0001", "T": 0}
        for s in symbols
    ]
    return json.dumps({"stream": "!markPrice@arr@1s", "data": marks})


class Rig:
    """A collector with books on one (unopened) connection, driven tick by tick on a FakeClock."""

    def __init__(self, tmp_path: Path, symbols: list[str], now_ms: int) -> None:
        self.clock = FakeClock(now_ms=now_ms)
        settings = Settings.model_validate({"data": {"data_dir": str(tmp_path), "seal_lag_seconds": LAG_MS / 1000}})
        self.collector = Collector(settings, CollectorOptions(), clock=self.clock)
        self.conn = StreamConnection("conn-1", "ws://127.0.0.1:9", self.collector, clock=self.clock)
        self.conn.up = True
        self.symbols = symbols
        for symbol in symbols:
            book = SymbolBook(symbol, T0)
            book.anchored = book.verified = True
            book.last_id = 99  # anchored: the window's first trade is id 100
            book.conn = self.conn
            self.collector.books[symbol] = book
        self.collector.sealer.next_window = T0
        self.paths = DataPaths(tmp_path)

    def trade(self, symbol: str, agg_id: int, time_ms: int) -> None:
        self.collector.on_frame(self.conn, trade_frame(symbol, agg_id, time_ms, self.clock.now_ms()))

    def at(self, now_ms: int) -> None:
        """Move the clock to `now_ms`; the exchange's heartbeat says the same time."""
        self.clock.set_ms(now_ms)
        self.collector.on_frame(self.conn, mark_frame(self.symbols, now_ms))

    def tick(self) -> None:
        asyncio.run(self.collector.step())

    def marker(self, window: int) -> dict[str, object] | None:
        path = self.paths.marker_file(window)
        return json.loads(path.read_text()) if path.exists() else None


def test_a_quiet_window_seals_when_the_clock_passes_its_end_plus_the_lag(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["BTCUSDT", "ETHUSDT"], T0 + 60_000)
    rig.trade("BTCUSDT", 100, T0 + 1_000)
    rig.trade("ETHUSDT", 100, T0 + 2_000)
    rig.trade("ETHUSDT", 101, T0 + 3_000)
    rig.at(T0 + 60_000)
    rig.tick()
    rig.at(END + LAG_MS - 1)
    rig.tick()
    assert rig.marker(T0) is None  # one millisecond short of the lag: a late trade could still arrive
    rig.at(END + LAG_MS)
    rig.tick()
    marker = rig.marker(T0)
    assert marker is not None
    assert marker["symbols"] == ["BTCUSDT", "ETHUSDT"] and marker["rows"] == 3 and marker["sealed_at"] == END + LAG_MS
    stored = TradeStore(rig.paths).scan_many(["BTCUSDT", "ETHUSDT"], T0, END).collect()
    assert stored["agg_trade_id"].to_list() == [100, 100, 101]  # flushed before the marker announced them
    assert rig.marker(END) is None


def test_an_open_gap_holds_the_window_until_it_is_filled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["BTCUSDT", "ETHUSDT"], T0 + 60_000)
    rig.trade("BTCUSDT", 100, T0 + 1_000)
    rig.trade("BTCUSDT", 102, T0 + 3_000)  # 101 is missing
    rig.trade("ETHUSDT", 100, T0 + 2_000)
    rig.at(END + 60_000)
    rig.tick()
    assert rig.collector.books["BTCUSDT"].gaps == [[101, 101]]
    assert rig.marker(T0) is None  # long past end + lag, but BTCUSDT cannot prove completeness
    rig.trade("BTCUSDT", 101, T0 + 2_000)  # the late trade arrives
    rig.tick()
    marker = rig.marker(T0)
    assert marker is not None and marker["rows"] == 4


def test_a_trade_after_the_window_end_seals_it_without_waiting_for_the_lag(tmp_path: Path) -> None:
    """Contiguous ids: a trade at T >= end proves every earlier one is held, whatever the clock says."""
    rig = Rig(tmp_path, ["BTCUSDT"], T0 + 60_000)
    rig.trade("BTCUSDT", 100, T0 + 1_000)
    rig.at(END - 1)
    rig.tick()
    assert rig.marker(T0) is None
    rig.clock.set_ms(END + 10)
    rig.trade("BTCUSDT", 101, END + 5)
    rig.tick()
    marker = rig.marker(T0)
    assert marker is not None and marker["rows"] == 1


def test_a_window_without_symbols_seals_on_the_clock_alone(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [], END + LAG_MS - 1)
    rig.tick()
    assert rig.marker(T0) is None
    rig.clock.set_ms(END + LAG_MS)
    rig.tick()
    marker = rig.marker(T0)
    assert marker is not None and marker["symbols"] == [] and marker["rows"] == 0


def test_buffers_are_flushed_every_flush_interval_of_the_clock(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ["BTCUSDT"], T0 + 60_000)
    store = TradeStore(rig.paths)
    rig.trade("BTCUSDT", 100, T0 + 1_000)
    rig.tick()
    assert store.last_id("BTCUSDT") is None  # buffered, not yet due
    rig.clock.advance(1.9)
    rig.tick()
    assert store.last_id("BTCUSDT") is None
    rig.clock.advance(0.1)
    rig.tick()
    assert store.last_id("BTCUSDT") == 100
    status = rig.collector.status()
    assert status["updated_at"] == rig.clock.now_ms() and status["last_flush"] == rig.clock.now_ms()
