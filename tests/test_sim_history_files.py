"""Bulk history files: Binance public-data layout, parsed with the csv module, equal to the market's trades/klines."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lsq.timelabels import DAY_MS, HOUR_MS, parse_day
from simulator.history_files import (
    AGG_TRADES_HEADER,
    KLINES_HEADER,
    HistoryFiles,
    HistoryNotFound,
    aggtrades_day_zip,
    checksum_text,
    history_days,
    klines_day_zip,
    market_cache_dir,
    resolve_history_path,
)
from simulator.instruments import select_instruments
from simulator.market import Market
from simulator.market.blocks import TRADES

DAY = "2026-04-02"
DAY_START = parse_day(DAY)
NOW = DAY_START + 3 * DAY_MS + 5 * HOUR_MS
LISTED_AT = DAY_START + 9 * HOUR_MS + 1234
AGG_PATH = f"/data/futures/um/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-{DAY}.zip"
KLINE_PATH = f"/data/futures/um/daily/klines/XRPUSDT/5m/XRPUSDT-5m-{DAY}.zip"


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(select_instruments(12, onboard={"ADAUSDT": LISTED_AT}), seed=3, rate_multiplier=0.2)


def unzip(data: bytes) -> tuple[str, list[list[str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode()
    return name, list(csv.reader(io.StringIO(text)))


def test_aggtrades_zip_holds_the_days_trades(market: Market) -> None:
    name, rows = unzip(aggtrades_day_zip(market, "XRPUSDT", DAY, NOW))
    assert name == f"XRPUSDT-aggTrades-{DAY}.csv"
    assert rows[0] == AGG_TRADES_HEADER.split(",")
    expected = market.trades("XRPUSDT", DAY_START, DAY_START + DAY_MS).to_rest_rows()
    assert len(rows) - 1 == len(expected) > 1000
    for got, want in zip(rows[1:], expected, strict=True):
        a, p, q, f, last, t, m = got
        assert (int(a), p, q, int(f), int(last), int(t)) == (
            want["a"],
            want["p"],
            want["q"],
            want["f"],
            want["l"],
            want["T"],
        )
        assert m == ("true" if want["m"] else "false")


def test_klines_zip_matches_the_rest_klines(market: Market) -> None:
    name, rows = unzip(klines_day_zip(market, "XRPUSDT", "5m", DAY, NOW))
    assert name == f"XRPUSDT-5m-{DAY}.csv"
    assert rows[0] == KLINES_HEADER.split(",")
    rest = market.klines("XRPUSDT", "5m", DAY_START, DAY_START + DAY_MS - 1, 1500, now_ms=NOW)
    assert len(rows) - 1 == len(rest) == 288
    assert rows[1:] == [[str(v) for v in row] for row in rest]
    assert int(rows[1][0]) == DAY_START and int(rows[-1][6]) == DAY_START + DAY_MS - 1


def test_resolve_routes_zips_and_checksums(market: Market) -> None:
    body, content_type = resolve_history_path(market, AGG_PATH, NOW)
    assert content_type == "application/zip"
    assert body == aggtrades_day_zip(market, "XRPUSDT", DAY, NOW)  # same bytes every time
    checksum, text_type = resolve_history_path(market, AGG_PATH + ".CHECKSUM", NOW)
    assert text_type.startswith("text/plain")
    digest, _, filename = checksum.decode().rstrip("\n").partition("  ")
    assert digest == hashlib.sha256(body).hexdigest() and filename == f"XRPUSDT-aggTrades-{DAY}.zip"
    assert checksum.decode() == checksum_text(body, filename)
    kline_body, _ = resolve_history_path(market, KLINE_PATH.removeprefix("/data/"), NOW)  # as mounted under /data/
    assert kline_body == klines_day_zip(market, "XRPUSDT", "5m", DAY, NOW)


@pytest.mark.parametrize(
    "path",
    [
        "/data/futures/um/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2026-04-05.zip",  # today at NOW
        "/data/futures/um/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2026-04-06.zip",  # the future
        "/data/futures/um/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2025-12-31.zip",  # before genesis
        "/data/futures/um/daily/aggTrades/ADAUSDT/ADAUSDT-aggTrades-2026-04-01.zip",  # before listing
        "/data/futures/um/daily/aggTrades/NOPEUSDT/NOPEUSDT-aggTrades-2026-04-02.zip",
        "/data/futures/um/daily/aggTrades/XRPUSDT/BTCUSDT-aggTrades-2026-04-02.zip",
        "/data/futures/um/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2026-02-30.zip",
        "/data/futures/um/daily/klines/XRPUSDT/7m/XRPUSDT-7m-2026-04-02.zip",
        "/data/futures/um/monthly/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2026-04.zip",
        "/data/spot/daily/aggTrades/XRPUSDT/XRPUSDT-aggTrades-2026-04-02.zip",
    ],
)
def test_missing_files_are_404(market: Market, path: str) -> None:
    assert resolve_history_path(market, path, NOW) is None


def test_listing_day_file_starts_at_the_first_trade(market: Market) -> None:
    day = "2026-04-02"
    _, rows = unzip(aggtrades_day_zip(market, "ADAUSDT", day, NOW))
    assert int(rows[1][5]) == LISTED_AT
    assert history_days(market, "ADAUSDT", NOW) == ["2026-04-02", "2026-04-03", "2026-04-04"]
    with pytest.raises(HistoryNotFound, match="first trade"):
        aggtrades_day_zip(market, "ADAUSDT", "2026-04-01", NOW)


def test_history_cache_serves_the_same_bytes_from_disk_to_a_new_server(market: Market, tmp_path: Path) -> None:
    directory = market_cache_dir(tmp_path, market.seed, market.rate_multiplier)
    built = resolve_history_path(market, AGG_PATH, NOW, HistoryFiles(2, directory))
    stored = directory / f"XRPUSDT-aggTrades-{DAY}.zip"
    assert built is not None and stored.read_bytes() == built[0] == aggtrades_day_zip(market, "XRPUSDT", DAY, NOW)
    # a later server with another market of the same seed reads the stored file (a replaced file proves it)
    stored.write_bytes(b"PK stored")
    again = Market(select_instruments(12, onboard={"ADAUSDT": LISTED_AT}), seed=3, rate_multiplier=0.2)
    body, _ = resolve_history_path(again, AGG_PATH, NOW, HistoryFiles(2, directory)) or (b"", "")
    checksum, _ = resolve_history_path(again, AGG_PATH + ".CHECKSUM", NOW, HistoryFiles(2, directory)) or (b"", "")
    assert body == b"PK stored" and checksum.decode() == checksum_text(b"PK stored", stored.name)
    # a day not complete yet is a 404 even when a file for it is stored (a server clock behind the one that built it)
    assert resolve_history_path(again, AGG_PATH, DAY_START + HOUR_MS, HistoryFiles(2, directory)) is None
    # another seed or rate, or another version of the generator, gets its own directory
    assert market_cache_dir(tmp_path, 4, 0.2) != directory != market_cache_dir(tmp_path, 3, 1.0)


def test_kept_day_summaries_give_a_new_server_the_same_daily_klines(market: Market, tmp_path: Path) -> None:
    """Daily klines over history (a backfill's universes) come from the kept day summaries after a restart, equal to
    what the trades give; a torn summary file is built again, not served."""
    kept = tmp_path / "day-summaries"
    first = Market(select_instruments(12, onboard={"ADAUSDT": LISTED_AT}), seed=3, rate_multiplier=0.2)
    first.keep_day_summaries(kept)
    expected = market.klines("XRPUSDT", "1d", DAY_START, None, 2, now_ms=NOW)
    assert first.klines("XRPUSDT", "1d", DAY_START, None, 2, now_ms=NOW) == expected
    stored = sorted(p.name for p in kept.iterdir())
    assert stored == [f"XRPUSDT-{DAY}.npy", "XRPUSDT-2026-04-03.npy"]
    # a server started again reads the kept rows (a replaced one proves it) and rebuilds a torn one
    doubled = kept / f"XRPUSDT-{DAY}.npy"
    row = np.load(doubled)
    row[:, TRADES] *= 2
    np.save(doubled, row)
    (kept / "XRPUSDT-2026-04-03.npy").write_bytes(b"\x93NUMPY torn")
    again = Market(select_instruments(12, onboard={"ADAUSDT": LISTED_AT}), seed=3, rate_multiplier=0.2)
    again.keep_day_summaries(kept)
    served = again.klines("XRPUSDT", "1d", DAY_START, None, 2, now_ms=NOW)
    assert served[0][8] == 2 * expected[0][8] and served[1] == expected[1]
