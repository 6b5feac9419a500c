"""The simulated market: determinism, contiguous ids, grids, klines/ticker against an independent Decimal
re-aggregation, listing mid-way, funding and premium index, and the public REST endpoints over real HTTP with
python-binance."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest
from aiohttp import web
from binance import Client
from binance.exceptions import BinanceAPIException

from lsq.timelabels import DAY_MS, HOUR_MS, MINUTE_MS, parse_day
from simulator.clock import Clock
from simulator.errors import BinanceError
from simulator.instruments import exchange_info, select_instruments
from simulator.market import GENESIS_MS, KLINE_INTERVALS, Market, MarketLike, NoTradesError
from simulator.market_endpoints import kline_weight, market_endpoints
from simulator.routing import Request

DAY = parse_day("2026-03-10")
LISTED_AT = DAY + 13 * HOUR_MS + 17 * MINUTE_MS + 4_321  # a symbol listed mid-day, mid-minute


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(select_instruments(16), seed=11)


@pytest.fixture(scope="module")
def quiet() -> Market:
    """Low activity so the Decimal re-aggregation in the test stays fast; KAVA lists mid-way."""
    return Market(select_instruments(40, onboard={"KAVAUSDT": LISTED_AT}), seed=5, rate_multiplier=0.05)


def same_trades(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in a._FIELDS)


# -- determinism and ids ------------------------------------------------------------------------------------------


def test_same_seed_same_trades_whatever_the_query_order(market: Market) -> None:
    other = Market(select_instruments(16), seed=11)
    start, end = DAY - 2 * HOUR_MS, DAY + 2 * HOUR_MS
    whole = market.trades("ETHUSDT", start, end)
    bounds = [*range(start, end, 17 * MINUTE_MS), end]
    pairs = list(itertools.pairwise(bounds))
    pieces = [other.trades("ETHUSDT", lo, hi) for lo, hi in reversed(pairs)]  # asked latest first
    assert len(whole) > 1000
    rebuilt = type(whole).concat(whole.instrument, pieces[::-1])
    assert same_trades(whole, rebuilt)
    assert market.mid_price("ETHUSDT", DAY + 5) == other.mid_price("ETHUSDT", DAY + 5)


def test_a_different_seed_gives_different_trades(market: Market) -> None:
    other = Market(select_instruments(16), seed=12)
    a, b = market.trades("BTCUSDT", DAY, DAY + MINUTE_MS), other.trades("BTCUSDT", DAY, DAY + MINUTE_MS)
    assert len(a) != len(b) or not np.array_equal(a.price_ticks, b.price_ticks)


def test_the_universe_size_does_not_change_a_symbols_trades(market: Market) -> None:
    wide = Market(select_instruments(40), seed=11)
    assert same_trades(market.trades("XRPUSDT", DAY, DAY + HOUR_MS), wide.trades("XRPUSDT", DAY, DAY + HOUR_MS))


def test_beyond_the_real_symbols_derived_ones_trade_with_their_sources_filters() -> None:
    """Scale tests (200 symbols) get made-up symbols carrying a real symbol's contract and filters."""
    chosen = select_instruments(250)
    names = [i.symbol for i in chosen]
    assert len(set(names)) == 250 and names[:2] == ["BTCUSDT", "ETHUSDT"]
    btc1 = next(i for i in chosen if i.symbol == "BTC1USDT")
    btc = chosen[0]
    assert (btc1.tick_size, btc1.step_size, btc1.min_notional, btc1.base_asset) == (
        btc.tick_size,
        btc.step_size,
        btc.min_notional,
        "BTC1",
    )
    wide = Market(chosen, seed=11)
    trades = wide.trades("BTC1USDT", DAY, DAY + HOUR_MS)
    assert len(trades) > 100 and not same_trades(trades, wide.trades("BTCUSDT", DAY, DAY + HOUR_MS))
    entry = next(e for e in exchange_info(chosen, 0)["symbols"] if e["symbol"] == "BTC1USDT")
    assert entry["baseAsset"] == "BTC1" and entry["status"] == "TRADING"


@pytest.mark.parametrize("symbol", ["BTCUSDT", "XRPUSDT", "TRXUSDT"])
def test_ids_are_contiguous_across_minute_hour_and_day_boundaries(market: Market, symbol: str) -> None:
    block = market.trades(symbol, DAY - HOUR_MS - 3 * MINUTE_MS, DAY + HOUR_MS + 3 * MINUTE_MS)
    assert (np.diff(block.agg_id) == 1).all()
    assert (block.first_id[1:] == block.last_id[:-1] + 1).all()
    assert (block.last_id >= block.first_id).all()
    assert (np.diff(block.time_ms) >= 0).all()
    assert block.time_ms[0] >= DAY - HOUR_MS - 3 * MINUTE_MS and block.time_ms[-1] < DAY + HOUR_MS + 3 * MINUTE_MS
    crossing = block.time_ms >= DAY
    assert crossing.any() and (~crossing).any()


def test_trades_from_id_agrees_with_trades_by_time(market: Market) -> None:
    by_time = market.trades("ETHUSDT", DAY - 30 * MINUTE_MS, DAY + 30 * MINUTE_MS)
    start_id = int(by_time.agg_id[0])
    assert market.first_id_at("ETHUSDT", DAY - 30 * MINUTE_MS) == start_id
    by_id = market.trades_from_id("ETHUSDT", start_id, len(by_time))
    assert same_trades(by_time, by_id)
    middle = int(by_time.agg_id[len(by_time) // 2])
    assert same_trades(market.trades_from_id("ETHUSDT", middle, 10), by_time[len(by_time) // 2 :][:10])
    clipped = market.trades_from_id("ETHUSDT", start_id, 10**6, end_ms=DAY)
    assert clipped.time_ms[-1] <= DAY and same_trades(clipped, market.trades("ETHUSDT", DAY - 30 * MINUTE_MS, DAY + 1))


def test_prices_on_the_tick_grid_and_quantities_on_the_step_grid(market: Market) -> None:
    for symbol in ("BTCUSDT", "XRPUSDT", "ADAUSDT", "TRXUSDT", "BNBUSDT"):
        inst = market.instrument(symbol)
        block = market.trades(symbol, DAY, DAY + 10 * MINUTE_MS)
        assert (block.price_ticks > 0).all() and (block.qty_steps >= inst.min_qty_steps).all()
        for row in block[:200].to_rest_rows():
            price, qty = Decimal(row["p"]), Decimal(row["q"])
            assert price % inst.tick_size == 0 and qty % inst.step_size == 0 and qty >= inst.min_qty
            assert len(row["p"].partition(".")[2]) == inst.price_decimals
            assert len(row["q"].partition(".")[2]) == inst.qty_decimals


def test_trades_look_like_a_market(market: Market) -> None:
    """Activity, volatility and sides in plausible ranges (what strategies built on this data rely on)."""
    day = market.trades("BTCUSDT", DAY, DAY + DAY_MS)
    assert 0.5 * 86_400 <= len(day) <= 20 * 86_400
    assert 0.3 < (~day.buyer_maker).mean() < 0.7
    closes = np.array([market.last_price_ticks("BTCUSDT", DAY + d * DAY_MS) for d in range(-30, 1)], dtype=float)
    daily = np.diff(np.log(closes)).std()
    assert 0.005 < daily < 0.15
    same_side_same_price = (
        (np.diff(day.price_ticks) == 0) & (np.diff(day.buyer_maker) == 0) & (np.diff(day.time_ms) < 100)
    ).mean()
    assert same_side_same_price < 0.01  # Binance would have merged those into one aggTrade


# -- klines and ticker against an independent Decimal aggregation -------------------------------------------------


def reaggregate(rows: list[dict], start: int, end: int, width: int, prev_close: Decimal) -> list[list]:
    """Binance kline rows from REST aggTrade rows, with Python Decimals (independent of the market's code)."""
    buckets: dict[int, list[dict]] = {}
    for r in rows:
        buckets.setdefault(r["T"] - (r["T"] - start) % width, []).append(r)
    out, close = [], prev_close
    for open_time in range(start, end, width):
        trades = buckets.get(open_time, [])
        prices = [Decimal(t["p"]) for t in trades]
        qtys = [Decimal(t["q"]) for t in trades]
        buys = [not t["m"] for t in trades]
        if trades:
            o, h, lo, close = prices[0], max(prices), min(prices), prices[-1]
        else:
            o = h = lo = close
        out.append(
            [
                open_time,
                o,
                h,
                lo,
                close,
                sum(qtys, Decimal(0)),
                open_time + width - 1,
                sum((p * q for p, q in zip(prices, qtys, strict=True)), Decimal(0)),
                sum(t["l"] - t["f"] + 1 for t in trades),
                sum((q for q, b in zip(qtys, buys, strict=True) if b), Decimal(0)),
                sum((p * q for p, q, b in zip(prices, qtys, buys, strict=True) if b), Decimal(0)),
            ]
        )
    return out


def as_decimals(row: list) -> list:
    return [Decimal(v) if isinstance(v, str) else v for v in row[:11]]


@pytest.mark.parametrize("symbol", ["BTCUSDT", "XRPUSDT", "TRXUSDT"])
def test_klines_equal_an_independent_reaggregation_of_the_trades(quiet: Market, symbol: str) -> None:
    day = DAY + DAY_MS
    rows = quiet.trades(symbol, day, day + DAY_MS).to_rest_rows()
    prev = Decimal(quiet.instrument(symbol).format_price(quiet.last_price_ticks(symbol, day - 1)))
    now = day + 3 * DAY_MS
    inst = quiet.instrument(symbol)
    for interval in ("1m", "5m", "1h", "1d"):
        width = KLINE_INTERVALS[interval]
        got = quiet.klines(symbol, interval, day, day + DAY_MS - 1, 1500, now_ms=now)
        expected = reaggregate(rows, day, day + DAY_MS, width, prev)
        assert [as_decimals(r) for r in got] == expected, interval
        assert all(r[11] == "0" for r in got)
        assert all(len(r[5].partition(".")[2]) == inst.qty_decimals for r in got)
        assert all(len(r[7].partition(".")[2]) == inst.price_decimals + inst.qty_decimals for r in got)
    one_minute = quiet.klines(symbol, "1m", day, day + DAY_MS - 1, 1500, now_ms=now)
    assert any(r[8] == 0 for r in one_minute)  # quiet minutes exist and repeat the previous close


def test_klines_stop_at_now_with_the_open_kline_partial(quiet: Market) -> None:
    now = DAY + 5 * HOUR_MS + 7 * MINUTE_MS + 12_345
    latest = quiet.klines("ETHUSDT", "5m", limit=3, now_ms=now)
    assert [r[0] for r in latest] == [now - now % (5 * MINUTE_MS) - k * 5 * MINUTE_MS for k in (2, 1, 0)]
    open_rows = quiet.trades("ETHUSDT", latest[-1][0], now + 1).to_rest_rows()
    prev = Decimal(latest[-2][4])
    expected = reaggregate(open_rows, latest[-1][0], latest[-1][0] + 5 * MINUTE_MS, 5 * MINUTE_MS, prev)
    assert as_decimals(latest[-1]) == expected[0]
    after = quiet.klines("ETHUSDT", "5m", now + 1, None, 10, now_ms=now)
    assert after == []


def test_kline_selection_follows_binance(quiet: Market) -> None:
    now = DAY + DAY_MS
    rows = quiet.klines("BTCUSDT", "1h", DAY + 1, None, 5, now_ms=now)
    assert [r[0] for r in rows] == [DAY + k * HOUR_MS for k in range(1, 6)]  # openTime >= startTime
    rows = quiet.klines("BTCUSDT", "1h", None, DAY + 90 * MINUTE_MS, 2, now_ms=now)
    assert [r[0] for r in rows] == [DAY, DAY + HOUR_MS]  # openTime <= endTime, the latest `limit`
    first = quiet.klines("BTCUSDT", "1m", 0, now, 1, now_ms=now)  # python-binance's earliest-timestamp probe
    assert first[0][0] == GENESIS_MS


def combine_days(days: list[list]) -> list:
    """One kline from consecutive daily ones (Decimal fields), as an exchange aggregates them."""
    d = [as_decimals(r) for r in days]
    first, last = d[0], d[-1]
    high, low = max(r[2] for r in d), min(r[3] for r in d)
    return [first[1], high, low, last[4], sum(r[5] for r in d), sum(r[8] for r in d), sum(r[9] for r in d)]


@pytest.mark.parametrize("interval", ["3d", "1w", "1M"])
def test_multi_day_klines_align_as_binance_and_sum_the_days(quiet: Market, interval: str) -> None:
    """3d klines count from the epoch, 1w ones open on Mondays 00:00 UTC, 1M ones on the 1st of each month; each
    aggregates exactly the daily klines it spans, and the open one runs up to now."""
    now = parse_day("2026-05-20") + 5 * HOUR_MS + 123
    daily = {r[0]: r for r in quiet.klines("ETHUSDT", "1d", 0, None, 1500, now_ms=now)}
    rows = quiet.klines("ETHUSDT", interval, 0, None, 1500, now_ms=now)
    opens = [datetime.fromtimestamp(r[0] / 1000, UTC) for r in rows]
    if interval == "3d":
        assert all(r[0] % (3 * DAY_MS) == 0 for r in rows)
    elif interval == "1w":
        assert all(o.weekday() == 0 and o.hour == 0 for o in opens)
        assert opens[0].date().isoformat() == "2025-12-29"  # the week holding genesis (a Thursday)
    else:
        assert [o.date().isoformat() for o in opens] == [f"2026-{m:02d}-01" for m in range(1, 6)]
    assert [r[6] + 1 for r in rows[:-1]] == [r[0] for r in rows[1:]]  # each closes where the next opens
    for row in rows:
        days = [daily[d] for d in range(row[0], row[6] + 1, DAY_MS) if d in daily]
        kept = [as_decimals(row)[k] for k in (1, 2, 3, 4, 5, 8, 9)]
        assert kept == combine_days(days), (interval, row[0])
    assert rows[-1][4] == daily[max(daily)][4] and rows[-1][6] >= now  # the open kline ends at now's trades
    latest = quiet.klines("ETHUSDT", interval, None, None, 2, now_ms=now)
    assert latest == rows[-2:]
    later = quiet.klines("ETHUSDT", interval, rows[1][0] + 1, None, 1, now_ms=now)  # openTime >= startTime
    assert later == [rows[2]]
    premium = quiet.premium_index_klines("ETHUSDT", interval, 0, None, 1500, now_ms=now)
    assert [(p[0], p[6]) for p in premium] == [(r[0], r[6]) for r in rows]


def test_ticker_equals_the_last_24h_of_trades(quiet: Market) -> None:
    now = DAY + 7 * HOUR_MS + 123_456
    inst = quiet.instrument("XRPUSDT")
    rows = quiet.trades("XRPUSDT", now - DAY_MS + 1, now + 1).to_rest_rows()
    ticker = quiet.ticker_24h("XRPUSDT", now)
    prices = [Decimal(r["p"]) for r in rows]
    qtys = [Decimal(r["q"]) for r in rows]
    assert Decimal(ticker["openPrice"]) == prices[0] and Decimal(ticker["lastPrice"]) == prices[-1]
    assert Decimal(ticker["highPrice"]) == max(prices) and Decimal(ticker["lowPrice"]) == min(prices)
    assert Decimal(ticker["volume"]) == sum(qtys)
    assert Decimal(ticker["quoteVolume"]) == sum(p * q for p, q in zip(prices, qtys, strict=True))
    assert ticker["count"] == sum(r["l"] - r["f"] + 1 for r in rows)
    assert (ticker["firstId"], ticker["lastId"]) == (rows[0]["f"], rows[-1]["l"])
    assert Decimal(ticker["priceChange"]) == prices[-1] - prices[0]
    assert Decimal(ticker["weightedAvgPrice"]) % inst.tick_size == 0


def test_prices_now(market: Market) -> None:
    now = DAY + 3 * HOUR_MS + 1
    inst = market.instrument("BTCUSDT")
    mid = market.mid_price("BTCUSDT", now)
    last = Decimal(inst.format_price(market.last_price_ticks("BTCUSDT", now)))
    assert mid % inst.tick_size == 0 and abs(mid / last - 1) < Decimal("0.005")
    assert abs(market.mark_price("BTCUSDT", now) / mid - 1) < Decimal("0.0001")
    with pytest.raises(NoTradesError):
        market.last_price_ticks("BTCUSDT", GENESIS_MS - 1)


# -- listing mid-way ----------------------------------------------------------------------------------------------


def test_a_symbol_listed_mid_way_has_nothing_before_its_first_trade(quiet: Market) -> None:
    assert len(quiet.trades("KAVAUSDT", DAY - 5 * DAY_MS, LISTED_AT)) == 0
    after = quiet.trades("KAVAUSDT", LISTED_AT, LISTED_AT + DAY_MS)
    assert after.time_ms[0] == LISTED_AT and (np.diff(after.agg_id) == 1).all()
    assert quiet.trades_from_id("KAVAUSDT", 0, 1).time_ms[0] == LISTED_AT
    assert quiet.first_id_at("KAVAUSDT", DAY - DAY_MS) == after.agg_id[0]
    now = LISTED_AT + 2 * DAY_MS
    first_kline = quiet.klines("KAVAUSDT", "1h", 0, None, 1, now_ms=now)[0]
    assert first_kline[0] == LISTED_AT - LISTED_AT % HOUR_MS
    assert quiet.funding_rates("KAVAUSDT", 0, None, 1, now_ms=now)[0]["fundingTime"] > LISTED_AT
    assert quiet.klines("KAVAUSDT", "1m", None, LISTED_AT - LISTED_AT % MINUTE_MS - 1, 10, now_ms=now) == []
    info = exchange_info(list(quiet.instruments.values()), now)
    assert next(s for s in info["symbols"] if s["symbol"] == "KAVAUSDT")["onboardDate"] == LISTED_AT
    with pytest.raises(NoTradesError):
        quiet.mid_price("KAVAUSDT", LISTED_AT - 1)
    assert quiet.mid_price("KAVAUSDT", LISTED_AT) > 0


def test_rest_shows_a_symbol_before_listing_as_pending(quiet: Market) -> None:
    endpoints = {ep.path: ep for ep in market_endpoints(quiet, Clock())}

    def call(path: str, now: int, **params: str) -> object:
        return asyncio.run(endpoints[path].handler(Request("GET", path, params, None, now)))

    before = call("/fapi/v1/exchangeInfo", LISTED_AT - 1)
    status = {s["symbol"]: s["status"] for s in before["symbols"]}
    assert status["KAVAUSDT"] == "PENDING_TRADING" and status["BTCUSDT"] == "TRADING"
    assert "KAVAUSDT" not in {t["symbol"] for t in call("/fapi/v1/ticker/24hr", LISTED_AT - 1)}
    assert call("/fapi/v1/aggTrades", LISTED_AT - 1, symbol="KAVAUSDT") == []
    with pytest.raises(BinanceError) as info:
        call("/fapi/v1/premiumIndex", LISTED_AT - 1, symbol="KAVAUSDT")
    assert info.value.code == -1121
    after = call("/fapi/v1/exchangeInfo", LISTED_AT)
    assert {s["symbol"]: s["status"] for s in after["symbols"]}["KAVAUSDT"] == "TRADING"
    trades = call("/fapi/v1/aggTrades", LISTED_AT + HOUR_MS, symbol="KAVAUSDT", startTime=str(LISTED_AT - 5))
    assert trades and trades[0]["T"] == LISTED_AT and trades[-1]["T"] <= LISTED_AT + HOUR_MS


# -- funding and premium index ------------------------------------------------------------------------------------


def test_funding_times_and_intervals(quiet: Market) -> None:
    hours = {s: quiet.funding_interval_hours(s) for s in quiet.instruments}
    assert set(hours.values()) == {4, 8} and hours["BTCUSDT"] == 8
    for symbol in ("BTCUSDT", next(s for s, h in hours.items() if h == 4)):
        step = hours[symbol] * HOUR_MS
        times = quiet.funding_times(symbol, DAY, DAY + DAY_MS)
        assert times == list(range(DAY, DAY + DAY_MS, step))
        rates = quiet.funding_rates(symbol, DAY, DAY + DAY_MS - 1, 100, now_ms=DAY + 2 * DAY_MS)
        assert [r["fundingTime"] for r in rates] == times
        for r in rates:
            assert set(r) == {"symbol", "fundingRate", "fundingTime", "markPrice"}
            assert abs(Decimal(r["fundingRate"])) <= Decimal("0.0075")
    latest = quiet.funding_rates("BTCUSDT", None, None, 3, now_ms=DAY + 1)
    assert [r["fundingTime"] for r in latest] == [DAY - 16 * HOUR_MS, DAY - 8 * HOUR_MS, DAY]
    rates = [
        Decimal(r["fundingRate"]) for s in quiet.instruments for r in quiet.funding_rates(s, DAY, DAY, 1, now_ms=DAY)
    ]
    assert len(set(rates)) > 1  # not a constant


def test_premium_index_shape(quiet: Market) -> None:
    now = DAY + 3 * HOUR_MS + 5
    p = quiet.premium_index("ETHUSDT", now)
    assert set(p) == {
        "symbol",
        "markPrice",
        "indexPrice",
        "estimatedSettlePrice",
        "lastFundingRate",
        "interestRate",
        "nextFundingTime",
        "time",
    }
    assert p["nextFundingTime"] == DAY + 8 * HOUR_MS and p["time"] == now
    assert Decimal(p["interestRate"]) == Decimal("0.0001")
    assert abs(Decimal(p["markPrice"]) / Decimal(p["indexPrice"]) - 1) < Decimal("0.01")
    rows = quiet.premium_index_klines("ETHUSDT", "1h", DAY, DAY + 2 * HOUR_MS, 500, now_ms=now)
    assert [r[0] for r in rows] == [DAY, DAY + HOUR_MS, DAY + 2 * HOUR_MS]
    for r in rows:
        assert len(r) == 12 and r[5] == r[7] == r[9] == r[10] == "0" and r[6] == r[0] + HOUR_MS - 1
        assert Decimal(r[3]) <= Decimal(r[1]) <= Decimal(r[2]) and Decimal(r[3]) <= Decimal(r[4]) <= Decimal(r[2])
    assert rows[0][4] == rows[1][1]  # continuous
    assert quiet.premium_index_klines("ETHUSDT", "1m", DAY, None, 5, now_ms=now) == quiet.premium_index_klines(
        "ETHUSDT", "1m", DAY, None, 5, now_ms=now + DAY_MS
    )


def test_market_satisfies_the_shared_protocol(market: Market) -> None:
    assert isinstance(market, MarketLike)


# -- REST over real HTTP with python-binance ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def client(quiet: Market) -> Iterator[Client]:
    """A bare aiohttp server mounting only these endpoints (the real app adds weights and signing around them)."""
    clock = Clock()
    endpoints = market_endpoints(quiet, clock)
    app = web.Application()
    for ep in endpoints:

        async def handle(request: web.Request, ep=ep) -> web.Response:
            req = Request(ep.method, ep.path, dict(request.query), None, clock.now_ms())
            try:
                return web.json_response(await ep.handler(req))
            except BinanceError as exc:
                return web.json_response(exc.body(), status=exc.http_status)

        app.router.add_route(ep.method, ep.path, handle)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    port = _free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    c = Client(None, None, ping=False)
    c.FUTURES_URL = f"http://127.0.0.1:{port}/fapi"
    yield c
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_python_binance_reads_the_public_endpoints(client: Client, quiet: Market) -> None:
    assert client.futures_ping() == {}
    assert abs(client.futures_time()["serverTime"] - Clock().now_ms()) < 5_000
    info = client.futures_exchange_info()
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert {"BTCUSDT", "BTCBUSD", "BTCUSDT_210924", "BTCSTUSDT"} <= set(symbols)
    assert [f["filterType"] for f in symbols["BTCUSDT"]["filters"]] == [
        "PRICE_FILTER",
        "LOT_SIZE",
        "MARKET_LOT_SIZE",
        "MAX_NUM_ORDERS",
        "MAX_NUM_ALGO_ORDERS",
        "MIN_NOTIONAL",
        "PERCENT_PRICE",
    ]
    now = Clock().now_ms()
    kl = client.futures_klines(symbol="BTCUSDT", interval="1h", startTime=DAY, endTime=DAY + 5 * HOUR_MS)
    assert kl == quiet.klines("BTCUSDT", "1h", DAY, DAY + 5 * HOUR_MS, 500, now_ms=now)
    trades = client.futures_aggregate_trades(symbol="BTCUSDT", startTime=DAY, endTime=DAY + 10 * MINUTE_MS)
    expected = quiet.trades("BTCUSDT", DAY, DAY + 10 * MINUTE_MS + 1)[:500].to_rest_rows()
    assert trades == expected
    more = client.futures_aggregate_trades(symbol="BTCUSDT", fromId=trades[-1]["a"] + 1, limit=5)
    assert [t["a"] for t in more] == [trades[-1]["a"] + k for k in range(1, 6)]
    latest = client.futures_aggregate_trades(symbol="BTCUSDT", limit=3)
    assert len(latest) == 3 and latest[-1]["T"] <= Clock().now_ms() and latest[1]["a"] == latest[0]["a"] + 1
    funding = client.futures_funding_rate(symbol="BTCUSDT", startTime=DAY, endTime=DAY + DAY_MS)
    assert [r["fundingTime"] for r in funding] == [DAY, DAY + 8 * HOUR_MS, DAY + 16 * HOUR_MS, DAY + DAY_MS]
    assert client.futures_premium_index_klines(symbol="BTCUSDT", interval="1d", limit=2)[-1][0] == now - now % DAY_MS
    mark = client.futures_mark_price(symbol="BTCUSDT")
    assert mark["symbol"] == "BTCUSDT" and Decimal(mark["markPrice"]) > 0
    assert len(client.futures_mark_price()) == 40
    history = client.futures_historical_klines("BTCUSDT", "1h", DAY, DAY + 30 * HOUR_MS)
    assert [r[0] for r in history] == [DAY + k * HOUR_MS for k in range(31)]
    ticker = client.futures_ticker(symbol="ETHUSDT")
    assert ticker["symbol"] == "ETHUSDT" and ticker["count"] > 0
    assert {t["symbol"] for t in client.futures_ticker()} == set(quiet.instruments)


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("futures_klines", {"interval": "1m"}, -1102),
        ("futures_klines", {"symbol": "BTCUSDT"}, -1102),
        ("futures_klines", {"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ("futures_klines", {"symbol": "BTCBUSD", "interval": "1m"}, -1121),
        ("futures_klines", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ("futures_klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}, -1100),
        ("futures_klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1501}, -1130),
        ("futures_klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 0}, -1130),
        ("futures_klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "x"}, -1100),
        ("futures_aggregate_trades", {"symbol": "BTCUSDT", "startTime": DAY, "endTime": DAY + HOUR_MS}, -1127),
        ("futures_aggregate_trades", {"symbol": "BTCUSDT", "limit": 1001}, -1130),
        ("futures_aggregate_trades", {"symbol": "BTCUSDT", "fromId": 5, "startTime": DAY}, -1128),
        ("futures_aggregate_trades", {}, -1102),
        ("futures_funding_rate", {"symbol": "BTCUSDT", "limit": 1001}, -1130),
        ("futures_premium_index_klines", {"symbol": "BTCUSDT", "interval": "2m"}, -1120),
        ("futures_mark_price", {"symbol": "XYZ"}, -1121),
        ("futures_ticker", {"symbol": "XYZ"}, -1121),
    ],
)
def test_bad_parameters_get_binance_errors(client: Client, method: str, params: dict, code: int) -> None:
    with pytest.raises(BinanceAPIException) as info:
        getattr(client, method)(**params)
    assert info.value.code == code and info.value.status_code == 400


def test_python_binance_reads_weekly_and_monthly_klines(client: Client) -> None:
    for interval in ("3d", "1w", "1M"):
        rows = client.futures_klines(symbol="ETHUSDT", interval=interval, limit=2)
        assert len(rows) == 2 and rows[0][6] + 1 == rows[1][0], interval
    monthly = client.futures_klines(symbol="ETHUSDT", interval="1M", limit=1)
    assert datetime.fromtimestamp(monthly[0][0] / 1000, UTC).day == 1


def test_kline_weights_follow_the_limit() -> None:
    assert [kline_weight({"limit": str(n)}) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [
        1,
        1,
        2,
        2,
        5,
        5,
        10,
        10,
    ]
    assert kline_weight({}) == 5
    weights = {ep.path: ep.weight_for({}) for ep in market_endpoints(Market(select_instruments(2), 1), Clock())}
    assert weights["/fapi/v1/aggTrades"] == 20 and weights["/fapi/v1/ticker/24hr"] == 40
