"""Replay of recorded aggTrades files: exactly the recorded trades, shifted to the server's start and sped up."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import pytest

from lsq.timelabels import MINUTE_MS, parse_day
from simulator.clock import Clock
from simulator.history_files import resolve_history_path
from simulator.market import MarketLike
from simulator.market_endpoints import market_endpoints
from simulator.replay import ReplayFileError, ReplayMarket
from simulator.routing import Request

RECORDED = parse_day("2024-08-08")
START_AT = parse_day("2026-11-20") + 12 * 3_600_000 + 500  # the server's start
BTC_ROWS = [  # a, p, q, f, l, T, m
    (100, "29000.10", "0.010", 1000, 1002, RECORDED + 1_000, "true"),
    (101, "29000.2", "0.5", 1003, 1003, RECORDED + 1_000, "false"),
    (102, "29001.00", "1.250", 1004, 1010, RECORDED + 30_500, "False"),
    (103, "28999.99", "0.001", 1011, 1011, RECORDED + 61_000, "TRUE"),
    (104, "29005.50", "2.000", 1012, 1015, RECORDED + 125_999, "false"),
    (105, "29004.00", "0.100", 1016, 1016, RECORDED + 180_000, "true"),
]
ORIGIN = RECORDED + 500  # the recording's earliest trade (ETH's first)
ETH_ROWS = [
    (7, "2500.01", "0.100", 70, 70, RECORDED + 500, "false"),
    (8, "2500.00", "3.000", 71, 74, RECORDED + 90_000, "true"),
]


def write_csv(path: Path, rows: list[tuple], header: bool) -> Path:
    lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    btc = write_csv(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv", BTC_ROWS, header=True)
    eth_csv = write_csv(tmp_path / "ETHUSDT-aggTrades-2024-08-08.csv", ETH_ROWS, header=False)
    eth_zip = tmp_path / "ETHUSDT-aggTrades-2024-08-08.zip"
    with zipfile.ZipFile(eth_zip, "w") as archive:
        archive.write(eth_csv, eth_csv.name)
    eth_csv.unlink()
    return [btc, eth_zip]


def expected_rows(rows: list[tuple], speed: float, tick_decimals: int, qty_decimals: int) -> list[dict]:
    return [
        {
            "a": a,
            "p": f"{float(p):.{tick_decimals}f}",
            "q": f"{float(q):.{qty_decimals}f}",
            "f": f,
            "l": last,
            "T": START_AT + int((t - ORIGIN) // speed),
            "m": m.lower() == "true",
        }
        for a, p, q, f, last, t, m in rows
    ]


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_serves_exactly_the_recorded_trades_shifted(files: list[Path], speed: float) -> None:
    replay = ReplayMarket.from_files(files, speed=speed, start_at_ms=START_AT)
    assert isinstance(replay, MarketLike)
    assert set(replay.instruments) == {"BTCUSDT", "ETHUSDT"}
    btc = replay.trades("BTCUSDT", 0, START_AT + 10 * MINUTE_MS).to_rest_rows()
    assert btc == expected_rows(BTC_ROWS, speed, 2, 3)
    assert replay.trades("ETHUSDT", 0, START_AT + 10 * MINUTE_MS).to_rest_rows() == expected_rows(ETH_ROWS, speed, 2, 3)
    assert replay.first_trade_ms("BTCUSDT") == START_AT + int(500 // speed)
    assert replay.first_trade_ms("ETHUSDT") == START_AT  # the earliest trade of the recording plays at the start
    assert replay.trades_from_id("BTCUSDT", 102, 2).to_rest_rows() == btc[2:4]
    assert replay.first_id_at("BTCUSDT", btc[3]["T"]) == 103
    assert replay.first_id_at("BTCUSDT", START_AT + 10 * MINUTE_MS) == 106


def test_replay_klines_ticker_and_prices_follow_the_recording(files: list[Path]) -> None:
    replay = ReplayMarket.from_files(files, speed=1.0, start_at_ms=START_AT)
    now = START_AT + 122_000  # trade 104 plays later, at START_AT + 125_499
    rows = replay.klines("BTCUSDT", "1m", None, None, 10, now_ms=now)
    first_open = START_AT + 500 - (START_AT + 500) % MINUTE_MS
    assert [r[0] for r in rows] == [first_open + k * MINUTE_MS for k in range(len(rows))]
    by_minute: dict[int, list[tuple]] = {}
    for row in BTC_ROWS:
        shifted = START_AT + row[5] - ORIGIN
        if shifted <= now:
            by_minute.setdefault(shifted - shifted % MINUTE_MS, []).append(row)
    for kline in rows:
        trades = by_minute.get(kline[0], [])
        if trades:
            prices = [float(t[1]) for t in trades]
            assert (float(kline[1]), float(kline[4])) == (prices[0], prices[-1])
            assert (float(kline[2]), float(kline[3])) == (max(prices), min(prices))
            assert kline[8] == sum(t[4] - t[3] + 1 for t in trades)
        else:
            assert kline[8] == 0 and kline[5] == "0.000"
    assert replay.last_price_ticks("BTCUSDT", now) == 2899999
    assert str(replay.mid_price("BTCUSDT", now)) == "28999.99"
    ticker = replay.ticker_24h("BTCUSDT", now)
    assert (ticker["firstId"], ticker["lastId"], ticker["count"]) == (1000, 1011, 12)
    assert replay.premium_index("BTCUSDT", now)["markPrice"] == "28999.99000000"


def test_replay_through_rest_and_history_files(files: list[Path]) -> None:
    replay = ReplayMarket.from_files(files, speed=1.0, start_at_ms=START_AT)
    endpoints = {ep.path: ep for ep in market_endpoints(replay, Clock())}
    now = START_AT + 62_000

    def call(path: str, **params: str) -> object:
        req = Request("GET", path, params, None, now)
        return asyncio.run(endpoints[path].handler(req))

    latest = call("/fapi/v1/aggTrades", symbol="BTCUSDT", limit="10")
    assert [t["a"] for t in latest] == [100, 101, 102, 103]  # nothing played after now
    assert call("/fapi/v1/aggTrades", symbol="BTCUSDT", fromId="102") == latest[2:]
    info = call("/fapi/v1/exchangeInfo")
    assert {"BTCUSDT", "ETHUSDT"} <= {s["symbol"] for s in info["symbols"]}
    day = "2026-11-20"
    later = START_AT + 2 * 86_400_000
    found = resolve_history_path(replay, f"/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{day}.zip", later)
    assert found is not None and found[1] == "application/zip"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "BTCUSDT-aggTrades-2024-08-08.csv",
            "1,29000.00,0.001,1,1,1000,true\n2,29000.00,abc,2,2,1001,false\n",
            "line 2",
        ),
        ("BTCUSDT-aggTrades-2024-08-08.csv", "1,29000.005,0.001,1,1,1000,true\n", "line 1: price off the tick grid"),
        ("BTCUSDT-aggTrades-2024-08-08.csv", "1,29000.00,0.0001,1,1,1000,true\n", "quantity off the step grid"),
        ("BTCUSDT-aggTrades-2024-08-08.csv", "1,29000.00,0.001,1,1,1000,maybe\n", "bad is_buyer_maker"),
        (
            "BTCUSDT-aggTrades-2024-08-08.csv",
            "2,29000.00,0.001,1,1,1000,true\n1,29000.00,0.001,2,2,1001,true\n",
            "line 2: agg",
        ),
        (
            "BTCUSDT-aggTrades-2024-08-08.csv",
            "1,29000.00,0.001,1,1,1000,true\n2,29000.00,0.001,2,2,999,true\n",
            "backwards",
        ),
        ("BTCUSDT-aggTrades-2024-08-08.csv", "1,29000.00,0.001,1,1,1000\n", "7 columns"),
        ("BTCUSDT-aggTrades-2024-08-08.csv", "", "no trades"),
        ("btcusdt-trades.csv", "1,29000.00,0.001,1,1,1000,true\n", "file name"),
        ("NOPEUSDT-aggTrades-2024-08-08.csv", "1,1.0,1,1,1,1000,true\n", "NOPEUSDT"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ReplayFileError) as info:
        ReplayMarket.from_files([path], speed=1.0, start_at_ms=START_AT)
    assert message in str(info.value)
    if "line" in message or "grid" in message:
        assert str(path) in str(info.value)


def test_speed_must_be_positive(files: list[Path]) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplayMarket.from_files(files, speed=0.0, start_at_ms=START_AT)
