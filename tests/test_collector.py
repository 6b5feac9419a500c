"""The collector against the real simulator: exact store, sealed-window markers, several connections, universe
changes without reconnecting, proactive connection replacement, status; plus frame parsing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from collectors.connection import backoff_delay
from collectors.daemon import Collector, CollectorOptions
from collectors.marks import MarkStore
from collectors.parse import AggTrade, MalformedFrame, Response, parse_frame
from collectors.status import format_status, liveness, read_status
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import WINDOW_MS, format_day, window_start
from lsq.tradestore import TradeStore
from simulator.ratelimit import RateLimits
from simulator.streams import mark_price_update

FAST_LIMITS = RateLimits().scaled(20)


# -- helpers shared with test_collector_faults.py --------------------------------------------------------------------


def collector_settings(sim: Any, data_dir: Path, seal_lag_s: float = 1.0) -> Settings:
    """The simulator's settings with a private data directory."""
    data = sim.settings.data.model_copy(update={"data_dir": data_dir, "seal_lag_seconds": seal_lag_s})
    return sim.settings.model_copy(update={"data": data})


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait for a condition, with a deadline generous enough for a loaded CI machine."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def settled_books(collector: Collector, symbols: list[str]) -> bool:
    """Every one of `symbols` is collected, anchored, verified and has nothing left to repair."""
    books = [collector.books.get(s) for s in symbols]
    return all(b is not None and b.anchored and b.verified and not b.gaps and not b.tail for b in books)


def run_collector(
    settings: Settings,
    options: CollectorOptions,
    seconds: float,
    during: Callable[[Collector], Awaitable[None]] | None = None,
) -> Collector:
    """Run a collector in this process until `during` (if given) returns, `seconds` more, then stop it cleanly."""

    async def main() -> Collector:
        collector = Collector(settings, options)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        if during is not None:
            await during(collector)
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 30)
        return collector

    return asyncio.run(main())


def exchange_frame(market: Any, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The simulator's own aggTrades of [start, end), typed like the store."""
    block = market.trades(symbol, start_ms, end_ms)
    return pl.DataFrame(
        {
            "agg_trade_id": block.agg_id,
            "price": pl.Series(block.prices(), dtype=pl.String),
            "quantity": pl.Series(block.quantities(), dtype=pl.String),
            "first_trade_id": block.first_id,
            "last_trade_id": block.last_id,
            "transact_time": block.time_ms,
            "is_buyer_maker": block.buyer_maker,
        }
    ).cast(TRADE_SCHEMA)  # type: ignore[arg-type]


def assert_store_matches_exchange(data_dir: Path, market: Any, symbols: list[str], start: int, end: int) -> int:
    """Every stored column equals the exchange's trades of [start, end) exactly; returns the row count."""
    store = TradeStore(DataPaths(data_dir))
    rows = 0
    for symbol in symbols:
        got = store.scan(symbol, start, end).collect()
        want = exchange_frame(market, symbol, start, end)
        missing = want.join(got, on="agg_trade_id", how="anti")
        extra = got.join(want, on="agg_trade_id", how="anti")
        assert missing.is_empty() and extra.is_empty(), (
            f"{symbol} [{start}, {end}): missing {missing.select('agg_trade_id', 'transact_time').rows()[:5]}, "
            f"unexpected {extra['agg_trade_id'].to_list()[:5]}"
        )
        assert got.equals(want), f"{symbol}: values differ"
        assert store.id_gaps(symbol, start, end) == []
        rows += got.height
    return rows


def proven_end(collector: Collector, symbols: list[str], now_ms: int) -> int:
    """The time before which the collector claims every trade of `symbols` (its sealing evidence), checked to be
    recent: the store is compared with the exchange up to the collector's own claim, not up to a wall-clock guess."""
    end = min(collector.books[s].seal.complete_before for s in symbols)
    assert end >= now_ms - 60_000, f"the collector fell {now_ms - end} ms behind"
    return end


def first_window(collector: Collector) -> int:
    """The window the collector started collecting from (the one current when it started, without markers)."""
    return min(b.seal.active_from for b in collector.books.values())


def server_time_to(sim: Any, target_ms: int) -> None:
    """Skew the simulator's clock so that its time is `target_ms` now: before any client connects, or forward only
    (a market's time never goes back)."""
    sim.clock.skew_ms = target_ms - (time.time_ns() // 1_000_000)


# -- parsing ---------------------------------------------------------------------------------------------------------

GOOD = (
    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":2,"s":"BTCUSDT","a":5,"p":"30000.10","q":"0.001",'
    '"f":7,"l":8,"T":1,"m":true,"st":"ignored"}}'
)


def test_parse_good_frames() -> None:
    trade = parse_frame(GOOD)
    assert trade == AggTrade("BTCUSDT", 5, "30000.10", "0.001", 7, 8, 1, True, 2)
    marks = parse_frame(
        '{"stream":"!markPrice@arr@1s","data":[{"e":"markPriceUpdate","E":9,"s":"BTCUSDT","p":"1.5","i":"1.4",'
        '"P":"1.45","r":"-0.00010000","T":28800000}]}'
    )
    assert isinstance(marks, list) and marks[0].funding_rate == "-0.00010000"
    assert parse_frame('{"result":null,"id":3}') == Response(3, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1,2]", "JSON object"),
        ('{"stream":"btcusdt@depth","data":{}}', "unknown stream"),
        (GOOD.replace('"a":5', '"a":"5"'), "'a'"),
        (GOOD.replace('"a":5', '"a":-5'), "'a'"),
        (GOOD.replace('"p":"30000.10"', '"p":30000.1'), "'p'"),
        (GOOD.replace('"p":"30000.10"', '"p":"1.123456789"'), "at most 8 decimals"),
        (GOOD.replace('"q":"0.001"', '"q":"NaN"'), "'q'"),
        (GOOD.replace('"m":true', '"m":1'), "'m'"),
        (GOOD.replace('"T":1,', ""), "'T'"),
        (GOOD.replace('"s":"BTCUSDT"', '"s":"ETHUSDT"'), "does not match"),
        (GOOD.replace('"f":7', '"f":9'), "last trade id"),
        ('{"hello":1}', "neither"),
    ],
)
def test_parse_rejects_malformed_frames(raw: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedFrame, match=reason):
        parse_frame(raw)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    first = [backoff_delay(1) for _ in range(200)]
    assert min(first) >= 0.25 and max(first) <= 0.5 and len(set(first)) > 100
    assert all(0.5 <= backoff_delay(2) <= 1.0 for _ in range(50))
    capped = [backoff_delay(30, cap_s=30.0) for _ in range(200)]
    assert min(capped) >= 15.0 and max(capped) <= 30.0


# -- status ----------------------------------------------------------------------------------------------------------


def test_status_liveness_and_format() -> None:
    now = 1_795_489_000_000
    status = {"running": True, "pid": 2**22 + 12345, "updated_at": now, "connections": [{"up": True}]}
    assert liveness(status, now) == "dead"
    status["pid"] = __import__("os").getpid()
    assert liveness(status, now + 1000) == "running"
    assert liveness(status, now + 60_000) == "stale"
    assert "STALE" in format_status(status, now + 60_000)
    assert liveness({**status, "running": False}, now) == "stopped"
    assert "1/1 up" in format_status(status, now)


# -- against the simulator -------------------------------------------------------------------------------------------


def test_collects_exactly_and_seals_windows_in_order(make_sim_server: Callable[..., Any], tmp_path: Path) -> None:
    """Catch-up from the last marker, then a live window end; 6 symbols over 3 connections."""
    sim = make_sim_server(symbols=6, limits=FAST_LIMITS)
    local = time.time_ns() // 1_000_000
    boundary = window_start(local) + 2 * WINDOW_MS
    server_time_to(sim, boundary - 4_000)  # the current window ends 4 s after the start
    current = boundary - WINDOW_MS
    paths = DataPaths(tmp_path)
    previous = current - 2 * WINDOW_MS  # pretend an earlier run sealed this one: catch up the next
    paths.marker_file(previous).parent.mkdir(parents=True)
    paths.marker_file(previous).write_text(json.dumps({"window_start": previous, "window_end": previous + WINDOW_MS}))

    async def sealed_both(collector: Collector) -> None:
        windows = (current - WINDOW_MS, current)
        await until(lambda: all(paths.marker_file(w).exists() for w in windows), "both windows sealed")

    options = CollectorOptions(streams_per_connection=3)
    collector = run_collector(collector_settings(sim, tmp_path), options, 0.5, during=sealed_both)

    symbols = sorted(sim.market.instruments)
    assert sorted(collector.books) == symbols
    assert len(collector.connections) == 3
    for window in (current - WINDOW_MS, current):
        marker = json.loads(paths.marker_file(window).read_text())
        assert marker["symbols"] == symbols
        assert marker["window_end"] == window + WINDOW_MS
        assert marker["partition_key"] == __import__("lsq.timelabels").timelabels.partition_key(window)
        expected = sum(len(sim.market.trades(s, window, window + WINDOW_MS)) for s in symbols)
        assert marker["rows"] == expected > 0
    assert not paths.marker_file(boundary).exists()
    end = proven_end(collector, symbols, sim.clock.now_ms())
    assert assert_store_matches_exchange(tmp_path, sim.market, symbols, current - WINDOW_MS, end) > 0
    status = read_status(paths.collector_status)
    assert status is not None and status["running"] is False
    assert status["last_sealed_window"]["window_start"] == current
    assert status["malformed_frames"] == 0
    marks = MarkStore(paths).scan(current, boundary + WINDOW_MS)
    assert set(marks["symbol"]) == set(symbols) and marks["mark_price"].dtype == pl.Decimal(38, 8)
    row = marks.row(len(marks) // 2, named=True)
    expected = mark_price_update(sim.market, row["symbol"], row["event_time"])
    assert (row["mark_price"], row["funding_rate"]) == (Decimal(expected["p"]), Decimal(expected["r"]))


def test_universe_change_resubscribes_without_reconnecting(sim_server: Any, tmp_path: Path) -> None:
    market = sim_server.market
    symbols = sorted(market.instruments)
    first, second = symbols[:3], symbols[2:5]
    paths = DataPaths(tmp_path)
    day = format_day(sim_server.clock.now_ms())
    universe = paths.universe_file(day, "v1")
    universe.parent.mkdir(parents=True)
    listed = [*first, "NOPEUSDT"]  # not on the exchange: refused, and must not block anything
    universe.write_text("symbol,rank\n" + "".join(f"{s},{i}\n" for i, s in enumerate(listed)))
    changed_at: list[int] = []
    applied_at: list[int] = []

    def applied(collector: Collector) -> bool:
        """The collector's books hold the new universe; notes the server time it was first seen so."""
        if sorted(collector.books) == second and not applied_at:
            applied_at.append(sim_server.clock.now_ms())
        return bool(applied_at)

    async def change(collector: Collector) -> None:
        # the first universe is complete and has been collected for a while before it changes
        await until(lambda: settled_books(collector, first), "the first universe settled")
        assert sorted(collector.books) == first
        await until(lambda: sim_server.clock.now_ms() >= first_window(collector) + 2_500, "2.5 s into the window")
        changed_at.append(sim_server.clock.now_ms())
        universe.write_text("symbol\n" + "\n".join(second) + "\n")
        await until(lambda: applied(collector), "the new universe applied", timeout_s=60.0)
        await until(lambda: settled_books(collector, second), "the new universe settled")

    options = CollectorOptions(universe_refresh_s=0.5)
    collector = run_collector(collector_settings(sim_server, tmp_path), options, 0.5, during=change)

    assert sorted(collector.books) == second
    assert collector.rejected == {"NOPEUSDT"}
    assert collector.universe_source == str(universe)
    assert [c.reconnects for c in collector.connections] == [0]
    end = proven_end(collector, second, sim_server.clock.now_ms())
    kept = symbols[2]
    assert collector.books[kept].seal.active_from < changed_at[0] - 2_000
    for added in second[1:]:
        # collected from the window current when the change was applied (or the next, when it was about to end)
        active_from = collector.books[added].seal.active_from
        assert window_start(changed_at[0]) <= active_from <= window_start(applied_at[0] + 2_000)
        assert_store_matches_exchange(tmp_path, market, [added], active_from, end)
    start = window_start(changed_at[0])
    assert_store_matches_exchange(tmp_path, market, [*first[:2], kept], start, changed_at[0] - 1_000)
    dropped = TradeStore(paths).last_trade(first[0])
    assert dropped is not None and dropped["transact_time"] < applied_at[0] + 2_000


def test_parts_are_merged_into_hour_files_while_collecting(sim_server: Any, tmp_path: Path) -> None:
    """A window run must not read an hour of 2-second flushes: the collector merges parts on a short cadence."""
    paths = DataPaths(tmp_path)

    async def merged(collector: Collector) -> None:
        def every_symbol_has_an_hour_file() -> bool:
            store = TradeStore(paths)
            return bool(collector.books) and all(
                any(paths.trade_hour_file(s, h).exists() for h in store.hours(s)) for s in collector.books
            )

        await until(every_symbol_has_an_hour_file, "an hour file for every symbol")

    options = CollectorOptions(compact_every_s=2.0)
    collector = run_collector(collector_settings(sim_server, tmp_path), options, 0.5, during=merged)
    store = TradeStore(paths)
    symbols = sorted(collector.books)
    hours = {h for s in symbols for h in store.hours(s)}
    parts = [p for s in symbols for h in hours for p in paths.trade_parts_dir(s, h).glob("*.parquet")]
    merged = [paths.trade_hour_file(s, h) for s in symbols for h in hours if paths.trade_hour_file(s, h).exists()]
    # ~5 flushes per symbol in 9 s; at most the flushes since the last merge (and the final one) remain as parts
    assert merged and len(parts) <= 3 * len(symbols), f"{len(parts)} parts left for {len(symbols)} symbols"
    end = proven_end(collector, symbols, sim_server.clock.now_ms())
    assert assert_store_matches_exchange(tmp_path, sim_server.market, symbols, first_window(collector), end)


def test_connections_are_replaced_before_their_lifetime_without_a_hole(sim_server: Any, tmp_path: Path) -> None:
    started = sim_server.clock.now_ms()
    settled: list[int] = []

    symbols = sorted(sim_server.market.instruments)

    async def rotate(collector: Collector) -> None:
        await until(lambda: settled_books(collector, symbols), "every symbol settled")
        settled.append(collector.gaps_opened)
        rotations = collector.connections[0].rotations
        await until(lambda: collector.connections[0].rotations >= rotations + 2, "two connection replacements")
        await until(lambda: settled_books(collector, symbols), "every symbol settled after the replacements")

    options = CollectorOptions(max_connection_age_s=1.5)
    collector = run_collector(collector_settings(sim_server, tmp_path), options, 0.5, during=rotate)
    (conn,) = collector.connections
    assert conn.rotations >= 2 and conn.reconnects == 0
    assert collector.gaps_opened == settled[0]  # the old socket streamed until the new one did: nothing to repair
    # the window current when the collector started (the next one if it was about to end), however long that took
    assert window_start(started) <= first_window(collector) <= window_start(collector.started_at + 2_000)
    end = proven_end(collector, symbols, sim_server.clock.now_ms())
    assert_store_matches_exchange(tmp_path, sim_server.market, symbols, first_window(collector), end)
