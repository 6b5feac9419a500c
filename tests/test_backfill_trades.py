"""`lsq backfill-trades` and the shared REST fetcher against the real simulator on loopback (bulk files + REST)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import aiohttp
import numpy as np
import polars as pl
import pytest
import yaml
from aiohttp import web

from collectors.history import backfill
from collectors.rest_backfill import (
    RestFetchError,
    RestSource,
    Until,
    WeightPacer,
    fetch_agg_trades_from_id,
    rows_to_frame,
)
from lsq.cli import main
from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS, MINUTE_MS, format_day, now_ms, parse_day
from lsq.tradestore import TradeStore
from simulator.market import Market
from simulator.ratelimit import RateLimits

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def expected(market: Market, symbol: str, start: int, end: int) -> pl.DataFrame:
    block = market.trades(symbol, start, end)
    return pl.DataFrame(
        {
            "agg_trade_id": block.agg_id,
            "price": pl.Series(block.prices()).cast(pl.Decimal(38, 8)),
            "quantity": pl.Series(block.quantities()).cast(pl.Decimal(38, 8)),
            "first_trade_id": block.first_id,
            "last_trade_id": block.last_id,
            "transact_time": block.time_ms,
            "is_buyer_maker": block.buyer_maker,
        }
    )


def write_config(sim, path: Path) -> Path:
    config = {
        "data": {"data_dir": str(sim.data_dir / "lsq")},
        "binance": {"mock": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "data_url": f"{sim.rest_url}/data"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def quiet_sim(make_sim_server: Callable):
    """A simulator with few trades (a day of BTC is ~6,000 aggTrades) so whole days fit in a test."""
    return make_sim_server(firehose=0.01, symbols=4)


def test_backfill_command_fills_days_from_bulk_and_today_by_rest(
    quiet_sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(quiet_sim, tmp_path / "lsq.yaml")
    now = now_ms()
    today = now - now % DAY_MS
    start = today - 2 * DAY_MS + 13 * 60 * MINUTE_MS  # a partial first day, a whole day, then today
    args = ["--config", str(config), "backfill-trades", "--symbols", "BTCUSDT,eth-usdt"]
    args += ["--start", f"{format_day(start)}T13:00", "--end", format_day(today + DAY_MS)]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "BTCUSDT: 2 days from bulk files" in out.out
    assert "\r" not in out.err and "\x1b[" not in out.err  # no progress bar when stderr is not a terminal
    store = TradeStore(DataPaths(quiet_sim.data_dir / "lsq"))
    for symbol in SYMBOLS:
        got = store.scan(symbol, start, today + DAY_MS).collect()
        last_time = int(got["transact_time"].max())
        if len(quiet_sim.market.trades(symbol, today, now)):  # (none yet in the first minutes after midnight)
            assert last_time >= today  # today's trades came by REST
        want = expected(quiet_sim.market, symbol, start, last_time + 1)
        assert got.equals(want), symbol
        assert store.id_gaps(symbol, start, today + DAY_MS) == []

    # A rerun skips the stored whole day without downloading and only asks REST for what is new.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "1 days already stored" in again and "0 days from bulk" not in again  # the partial day is re-read
    for symbol in SYMBOLS:
        assert store.scan(symbol, start, today + DAY_MS).collect()["agg_trade_id"].is_unique().all()


def test_backfill_repairs_what_the_store_lost(quiet_sim) -> None:
    settings = quiet_sim.settings
    store = TradeStore(DataPaths(settings.data_dir))
    now = now_ms()
    start = now - now % DAY_MS - DAY_MS  # yesterday from its bulk file, then today by REST
    first = asyncio.run(backfill(settings, ["BTCUSDT"], start, now))[0]
    assert first.bulk_days == [format_day(start)]
    assert first.rest_rows >= len(quiet_sim.market.trades("BTCUSDT", start + DAY_MS, now))  # today, by REST
    # Lose 120 trades of yesterday and all of today: the rerun sees the day no longer matches its marker.
    stored = store.scan("BTCUSDT", start, now).collect()
    yesterday = stored.filter(pl.col("transact_time") < start + DAY_MS)
    hole = yesterday.slice(2000, 120)
    for path in (DataPaths(settings.data_dir).trades / "BTCUSDT").rglob("*.parquet"):
        path.unlink()
    store.write_part("BTCUSDT", yesterday.join(hole, on="agg_trade_id", how="anti"))
    second = asyncio.run(backfill(settings, ["BTCUSDT"], start, now_ms()))[0]
    assert second.skipped_days == [] and second.bulk_days == [format_day(start)]
    assert second.written >= 120 + stored.height - yesterday.height
    got = store.scan("BTCUSDT", start, now_ms()).collect()
    assert got.equals(expected(quiet_sim.market, "BTCUSDT", start, int(got["transact_time"].max()) + 1))


def test_interrupted_fetch_keeps_what_was_delivered(quiet_sim) -> None:
    market = quiet_sim.market
    now = now_ms()
    day = now - now % DAY_MS - DAY_MS
    first_id = int(market.trades("ETHUSDT", day, day + DAY_MS).agg_id[0])
    batches: list[pl.DataFrame] = []

    def stop_after_two(batch: pl.DataFrame) -> None:
        batches.append(batch)
        if len(batches) == 2:
            raise KeyboardInterrupt

    async def run() -> int:
        async with aiohttp.ClientSession() as session:
            source = RestSource(session, quiet_sim.rest_url)
            await source.configure()
            with pytest.raises(KeyboardInterrupt):
                await fetch_agg_trades_from_id(source, "ETHUSDT", first_id, Until(end_ms=day + DAY_MS), stop_after_two)
            resume = int(batches[-1]["agg_trade_id"][-1]) + 1
            return await fetch_agg_trades_from_id(source, "ETHUSDT", resume, Until(end_ms=day + DAY_MS), batches.append)

    rest = asyncio.run(run())
    got = pl.concat(batches)
    assert rest > 0 and got.height == 2000 + rest
    assert got.equals(expected(market, "ETHUSDT", day, day + DAY_MS))


def test_pacing_follows_the_advertised_weight_limit(make_sim_server: Callable) -> None:
    """100 weight/min (5 aggTrades calls): the fetcher waits for the exchange's next minute instead of a 429."""
    sim = make_sim_server(firehose=0.01, symbols=2, limits=RateLimits(request_weight_per_minute=100))
    server_now = now_ms()
    sim.clock.skew_ms = (MINUTE_MS - server_now % MINUTE_MS) - 6000  # 6 s before the server's minute rolls over
    day = server_now - server_now % DAY_MS - 3 * DAY_MS  # ids run on across days: enough trades for the test
    first_id = int(sim.market.trades("BTCUSDT", day, day + DAY_MS).agg_id[0])
    got: list[pl.DataFrame] = []

    async def run() -> RestSource:
        async with aiohttp.ClientSession() as session:
            source = RestSource(session, sim.rest_url)
            await source.configure()
            await fetch_agg_trades_from_id(source, "BTCUSDT", first_id, Until(last_id=first_id + 4999), got.append)
            return source

    source = asyncio.run(run())
    assert source.pacer.limit == 100
    assert 0 < source.pacer.waited_s < 10
    assert source.requests == 2 + 5  # time + exchangeInfo + 5 x 1000 trades, no refused request repeated
    assert pl.concat(got)["agg_trade_id"].to_list() == list(range(first_id, first_id + 5000))


def test_429_is_answered_by_waiting_retry_after(make_sim_server: Callable) -> None:
    """A client that ignores the limit (pacer set far too high) gets 429 and waits as told, then completes."""
    sim = make_sim_server(firehose=0.01, symbols=2, limits=RateLimits(request_weight_per_minute=60))
    server_now = now_ms()
    sim.clock.skew_ms = (MINUTE_MS - server_now % MINUTE_MS) - 5000
    day = server_now - server_now % DAY_MS - 3 * DAY_MS  # ids run on across days: enough trades for the test
    first_id = int(sim.market.trades("BTCUSDT", day, day + DAY_MS).agg_id[0])
    got: list[pl.DataFrame] = []

    async def run() -> RestSource:
        async with aiohttp.ClientSession() as session:
            source = RestSource(session, sim.rest_url, WeightPacer(limit=10**6, headroom=1.0))
            await fetch_agg_trades_from_id(source, "BTCUSDT", first_id, Until(last_id=first_id + 3999), got.append)
            return source

    source = asyncio.run(run())
    assert source.requests == 5 and 0 < source.pacer.waited_s < 10  # 3 served, one 429, then the 4th
    assert pl.concat(got).height == 4000


class _HoleyExchange:
    """A tiny real HTTP server serving aggTrades ids 1..N, leaving out some ids the first `misses` times."""

    def __init__(self, n: int, hole: range, misses: int) -> None:
        self.ids = np.arange(1, n + 1)
        self.hole, self.misses, self.calls = hole, misses, 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        start = int(request.query["fromId"])
        ids = [int(i) for i in self.ids[start - 1 : start - 1 + int(request.query["limit"])]]
        if self.misses > 0 and any(i in self.hole for i in ids):
            self.misses -= 1
            ids = [i for i in ids if i not in self.hole]
        rows = [{"a": i, "p": "1.5", "q": "2", "f": i, "l": i, "T": 1_700_000_000_000 + i, "m": False} for i in ids]
        return web.json_response(rows, headers={"X-MBX-USED-WEIGHT-1M": str(20 * self.calls)})


async def _fetch_from(exchange: _HoleyExchange) -> list[int]:
    app = web.Application()
    app.router.add_get("/fapi/v1/aggTrades", exchange.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            source = RestSource(session, f"http://127.0.0.1:{port}")
            await fetch_agg_trades_from_id(
                source, "XUSDT", 1, Until(last_id=2500), lambda b: got.extend(b["agg_trade_id"].to_list())
            )
    finally:
        await runner.cleanup()
    return got


def test_holes_are_fetched_again_by_from_id() -> None:
    exchange = _HoleyExchange(3000, range(1200, 1210), misses=2)
    assert asyncio.run(_fetch_from(exchange)) == list(range(1, 2501))
    assert exchange.calls == 5  # 1..1000, 1001..1199 (cut at the hole), twice more from 1200, then to 2500


def test_a_hole_that_persists_is_an_error() -> None:
    with pytest.raises(RestFetchError, match="skips ids from 1200"):
        asyncio.run(_fetch_from(_HoleyExchange(3000, range(1200, 1210), misses=100)))


def test_days_without_a_file_long_ago_are_not_walked_by_rest(quiet_sim) -> None:
    """Before the simulator's genesis there is no file: reported, not hunted hour by hour over REST."""
    settings = quiet_sim.settings
    start = parse_day("2025-12-30")
    end = parse_day("2026-01-01") + 60 * MINUTE_MS
    report = asyncio.run(backfill(settings, ["ETHUSDT"], start, end))[0]
    assert report.no_file_days == ["2025-12-30", "2025-12-31"]
    assert report.bulk_days == ["2026-01-01"] and report.rest_rows == 0
    got = TradeStore(DataPaths(settings.data_dir)).scan("ETHUSDT", start, end).collect()
    assert got.height > 0 and got.equals(expected(quiet_sim.market, "ETHUSDT", start, end))


def test_unreachable_exchange_fails_fast_with_its_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "lsq.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"data_dir": str(tmp_path / "data")},
                "binance": {"mock": {"rest_url": url, "ws_url": f"ws://127.0.0.1:{port}", "data_url": f"{url}/data"}},
            }
        )
    )
    args = ["--config", str(config), "backfill-trades", "--symbols", "BTCUSDT", "--start", "2026-11-01"]
    assert main([*args, "--end", "2026-11-02"]) == 1
    assert f"cannot reach the exchange at {url}" in capsys.readouterr().err
    assert main([*args, "--end", "2026-10-01"]) == 2  # end before start


def test_malformed_rest_rows_are_refused_not_rounded() -> None:
    good = {"a": 1, "p": "1.5", "q": "2", "f": 1, "l": 1, "T": 5, "m": False}
    assert rows_to_frame([good])["price"].to_list() == [Decimal("1.5")]
    with pytest.raises(RestFetchError, match="not a decimal with <= 8 places"):
        rows_to_frame([{**good, "p": "1.123456789"}])
    with pytest.raises(RestFetchError, match="malformed aggTrades rows"):
        rows_to_frame([{k: v for k, v in good.items() if k != "m"}])


@pytest.mark.slow
def test_an_import_killed_midway_resumes_without_losing_or_duplicating_a_trade(
    make_sim_server: Callable, tmp_path: Path
) -> None:
    """SIGKILL `lsq backfill-trades` once its first day is stored, run it again: the store holds every trade once."""
    sim = make_sim_server(firehose=0.2, symbols=4)  # ~130,000 trades a day of BTC: 12 files take seconds
    config = write_config(sim, tmp_path / "lsq.yaml")
    today = now_ms() - now_ms() % DAY_MS
    start, end = today - 3 * DAY_MS, today
    symbols = sorted(sim.market.instruments)
    argv = [sys.executable, "-m", "lsq.cli", "--config", str(config), "backfill-trades", "--symbols", ",".join(symbols)]
    argv += ["--start", format_day(start), "--end", format_day(end)]
    paths = DataPaths(sim.data_dir / "lsq")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(paths.root.glob("history/**/*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    interrupted = proc.poll() is None
    proc.kill()
    proc.wait(timeout=60)
    assert interrupted, "the import ended before it could be interrupted"
    store = TradeStore(paths)
    stored_before = sum(store.scan(s, start, end).select(pl.len()).collect().item() for s in symbols)

    reports = asyncio.run(backfill(load_config(config), symbols, start, end))
    want = {s: expected(sim.market, s, start, end) for s in symbols}
    assert 0 < stored_before < sum(w.height for w in want.values())  # it was stopped halfway
    assert sum(len(r.skipped_days) for r in reports) >= 1  # the day stored whole before the kill is not fetched again
    for symbol in symbols:
        assert store.scan(symbol, start, end).collect().equals(want[symbol]), symbol
        files = [*paths.symbol_trades(symbol).glob("*.parquet"), *paths.symbol_trades(symbol).glob("parts/*/*.parquet")]
        on_disk = pl.concat([pl.read_parquet(f, columns=["agg_trade_id"]) for f in files])
        assert on_disk.height == want[symbol].height  # no trade twice in the files either
