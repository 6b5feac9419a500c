"""The strategy data API over real stored panels produced by the pipeline's own assets."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from builders import market, universe_frame, window_stats_without_checks

from lsq.clock import FakeClock
from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel, write_panel
from lsq.stores.universes import TRADED_VERSION, write_universe
from lsq.strategy_api import StrategyDataAPI, get_strategy_api
from lsq.timelabels import (
    DAY_MS,
    HOUR_MS,
    WINDOW_MS,
    day_start,
    format_day,
    label_of,
    now_ms,
    parse_day,
    parse_partition_key,
    partition_key,
)
from lsq.tradestore import TradeStore
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

START = parse_partition_key("2026-11-20-22:00")  # two hours on each side of a UTC midnight
END = START + 4 * HOUR_MS
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
MARKET = market()


def trades(start_ms: int, end_ms: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = (end_ms - start_ms) // 10_000
    times = np.sort(rng.integers(start_ms, end_ms, n))
    times = times[((times - start_ms) // WINDOW_MS) % 7 != 3]  # every 7th window is quiet
    n = len(times)
    return pl.DataFrame(
        {
            "agg_trade_id": np.arange(1, n + 1),
            "price": [f"{p / 100:.2f}" for p in 100_000 + np.cumsum(rng.integers(-5, 6, n))],
            "quantity": [f"{q / 1000:.3f}" for q in rng.integers(1, 900, n)],
            "first_trade_id": np.arange(1, n + 1),
            "last_trade_id": np.arange(1, n + 1),
            "transact_time": times,
            "is_buyer_maker": rng.random(n) < 0.4,
        }
    )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> StrategyDataAPI:
    paths = DataPaths(tmp_path_factory.mktemp("api") / "data")
    store = TradeStore(paths)
    for i, s in enumerate(SYMBOLS):
        store.write_part(s, trades(START, END, seed=i))
    for day in ("2026-11-20", "2026-11-21"):
        write_universe(paths, day, "v1", universe_frame(SYMBOLS))
    resources = {"lsq": LsqResource(data_dir=str(paths.root))}
    last = END - WINDOW_MS
    tags = {RANGE_START_TAG: "2026-11-20-22:00", RANGE_END_TAG: partition_key(last)}
    instance = dg.DagsterInstance.ephemeral()
    bars = window_stats_without_checks()  # no exchange here: neither the premium index nor the parity check
    assert dg.materialize(
        [MARKET.window_stats_5m], instance=instance, tags=tags, resources=resources, selection=bars
    ).success
    hourly = [a for a in MARKET.rollups if a.key.path[0] in ("bars_1h", "tran_stats_1h")]
    tags = {RANGE_START_TAG: "2026-11-20-22:00", RANGE_END_TAG: "2026-11-21-01:00"}
    assert dg.materialize(hourly, instance=instance, tags=tags, resources=resources).success
    minutes = pl.int_range(START, END, WINDOW_MS, dtype=pl.Int64, eager=True)
    premium = pl.DataFrame({"symbol": "BTCUSDT", "open_time": minutes}).with_columns(
        (pl.col("open_time") + WINDOW_MS - 1).alias("close_time"),
        *[(pl.col("open_time") % 97 / 1e5 + k).alias(c) for k, c in enumerate(("open", "high", "low", "close"))],
    )
    write_panel(paths, "premium_index", premium, START, END)
    funding = pl.DataFrame(
        {
            "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"],
            "funding_time": [START, START + 2 * HOUR_MS, START + 2 * HOUR_MS],
            "funding_rate": [0.0001, -0.0002, 0.0003],
            "mark_price": [1000.0, 1001.0, 50.0],
        }
    )
    write_panel(paths, "funding", funding, START, END)
    return StrategyDataAPI(paths)


def test_five_minute_bars_between_labels_inclusive(api: StrategyDataAPI) -> None:
    begin, end = label_of(START), label_of(END - WINDOW_MS)
    assert (begin, end) == ("2026-11-20-265", "2026-11-21-024")
    bars = api.get_bar_between(begin, end)
    assert sorted(bars) == ["btc-usdt", "eth-usdt"]
    btc = bars["btc-usdt"]
    assert btc["open_time"].to_list() == list(range(START, END, WINDOW_MS))
    stored = load_panel("bars", START, END, paths=api.paths).filter(pl.col("symbol") == "BTCUSDT")
    assert btc["symbol"].unique().to_list() == ["btc-usdt"]
    assert btc.drop("symbol").equals(stored.drop("symbol"))
    one = api.get_bar_between("2026-11-21-001", "2026-11-21-001")
    assert [f.height for f in one.values()] == [1, 1]
    assert one["eth-usdt"]["open_time"][0] == day_start(END)


def test_hourly_mode_equals_the_stored_rollup_and_covers_open_hours(api: StrategyDataAPI) -> None:
    hourly = api.get_bar_between(label_of(START), label_of(END - WINDOW_MS), mode="1h")["btc-usdt"]
    stored = load_panel("bars", START, END, period="1h", paths=api.paths).filter(pl.col("symbol") == "BTCUSDT")
    assert hourly.drop("symbol").equals(stored.drop("symbol"))
    # An hour cut short by the end label: rolled up from the windows that exist, up to and including that label.
    partial = api.get_bar_between(label_of(START), label_of(START + 6 * WINDOW_MS), mode="1h")["btc-usdt"]
    five = api.get_bar_between(label_of(START), label_of(START + 6 * WINDOW_MS))["btc-usdt"]
    assert partial.height == 1
    assert partial["volume"][0] == five["volume"].sum()
    assert partial["close"][0] == five["close"][-1]
    daily = api.get_bar_between(label_of(START), label_of(END - WINDOW_MS), mode="24h")["eth-usdt"]
    assert daily["open_time"].to_list() == [day_start(START), day_start(END)]


def test_tran_stats_modes(api: StrategyDataAPI) -> None:
    five = api.get_tran_stats_between(label_of(START), label_of(END - WINDOW_MS))["eth-usdt"]
    hourly = api.get_tran_stats_between(label_of(START), label_of(END - WINDOW_MS), mode="1h")["eth-usdt"]
    stored = load_panel("tran_stats", START, END, period="1h", paths=api.paths).filter(pl.col("symbol") == "ETHUSDT")
    assert hourly.drop("symbol").equals(stored.drop("symbol"))
    assert hourly["buy_volume"].sum() == five["buy_volume"].sum()
    for mode in ("4h", "8h", "12h"):
        rolled = api.get_tran_stats_between(label_of(START), label_of(END - WINDOW_MS), mode=mode)["eth-usdt"]
        assert rolled["trade_count"].sum() == five["trade_count"].sum()


def test_premium_index_and_funding(api: StrategyDataAPI) -> None:
    premium = api.get_premium_index_bar_between(label_of(START), label_of(START + 11 * WINDOW_MS))
    assert list(premium) == ["btc-usdt"] and premium["btc-usdt"].height == 12
    hour = api.get_premium_index_bar_between(label_of(START), label_of(START + 11 * WINDOW_MS), mode="1h")["btc-usdt"]
    five = premium["btc-usdt"]
    assert hour.row(0, named=True) == {
        "symbol": "btc-usdt",
        "open_time": START,
        "close_time": START + HOUR_MS - 1,
        "open": five["open"][0],
        "high": five["high"].max(),
        "low": five["low"].min(),
        "close": five["close"][-1],
    }
    funding = api.get_funding_rate_between(label_of(START), label_of(START + 2 * HOUR_MS))
    assert funding["btc-usdt"]["funding_rate"].to_list() == [0.0001, -0.0002]
    assert funding["eth-usdt"]["funding_time"].to_list() == [START + 2 * HOUR_MS]
    assert api.get_funding_rate_between(label_of(START), label_of(START + 2 * HOUR_MS - WINDOW_MS)).keys() == {
        "btc-usdt"
    }


def test_bad_requests_raise_clear_errors(api: StrategyDataAPI) -> None:
    with pytest.raises(ValueError, match="bad label '2026-11-20-289'"):
        api.get_bar_between("2026-11-20-289", "2026-11-21-001")
    with pytest.raises(ValueError, match="bad window 'yesterday': expected a partition key"):
        api.get_tran_stats_between("yesterday", "2026-11-21-001")
    with pytest.raises(ValueError, match="inverted range"):
        api.get_bar_between("2026-11-21-002", "2026-11-21-001")
    with pytest.raises(ValueError, match="unknown mode '2h'"):
        api.get_bar_between("2026-11-21-001", "2026-11-21-002", mode="2h")
    assert api.get_bar_between("2026-10-01-001", "2026-10-01-288") == {}


def test_windows_by_any_name_and_periods_by_any_spelling(api: StrategyDataAPI) -> None:
    """A window named by its label, its partition key (start) or its positions stamp (end) is the same window;
    '5min' and '5m', '1h' and '60min' are the same period."""
    by_label = api.get_bar_between("2026-11-20-265", "2026-11-20-276", mode="5min")
    assert api.get_bar_between("2026-11-20-22:00", "2026-11-20-22:55", mode="5m").keys() == by_label.keys()
    for name, frame in api.get_bar_between("20261120_220500", "_20261120_230000").items():
        assert frame.equals(by_label[name])
    hourly = api.get_bar_between("2026-11-20-265", "2026-11-20-276", mode="1h")
    for name, frame in api.get_bar_between("2026-11-20-265", "2026-11-20-276", mode="60min").items():
        assert frame.equals(hourly[name])


def test_last_universe_defaults_to_the_traded_version(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path / "data")
    today = parse_day("2026-11-20") + 9 * HOUR_MS
    fresh = StrategyDataAPI(paths, FakeClock(today))
    with pytest.raises(FileNotFoundError, match=f"no {TRADED_VERSION} universe"):
        fresh.get_last_universe()
    write_universe(paths, format_day(today - DAY_MS), "v1", universe_frame(["BTCUSDT", "ETHUSDT"]))
    write_universe(paths, format_day(today - DAY_MS), "v2", universe_frame(["BTCUSDT"]))
    assert fresh.get_last_universe()["symbol"].to_list() == ["btc-usdt"]
    assert fresh.get_last_universe("v1")["symbol"].to_list() == ["btc-usdt", "eth-usdt"]
    write_universe(paths, format_day(today), "v1", universe_frame(["ETHUSDT", "SOLUSDT"]))
    write_universe(paths, format_day(today + DAY_MS), "v1", universe_frame(["XRPUSDT"]))  # tomorrow's: not in force
    assert fresh.get_last_universe("v1")["symbol"].to_list() == ["eth-usdt", "sol-usdt"]
    with pytest.raises(ValueError, match="unknown universe version 'v3'"):
        fresh.get_last_universe("v3")


def test_get_strategy_api_uses_the_configured_data_dir(tmp_path: Path) -> None:
    settings = load_config(env={"LSQ_DATA_DIR": str(tmp_path)})
    assert get_strategy_api(settings).paths.root == tmp_path.resolve()


def test_the_traded_universe_follows_strategy_universe_version(tmp_path: Path) -> None:
    base = load_config(env={"LSQ_DATA_DIR": str(tmp_path)})
    assert base.strategy.universe_version == "v2"
    day = format_day(now_ms())
    write_universe(DataPaths(tmp_path), day, "v1", universe_frame(["BTCUSDT", "ETHUSDT"]))
    write_universe(DataPaths(tmp_path), day, "v2", universe_frame(["BTCUSDT"]))
    assert get_strategy_api(base).get_last_universe()["symbol"].to_list() == ["btc-usdt"]
    v1 = base.model_copy(update={"strategy": base.strategy.model_copy(update={"universe_version": "v1"})})
    assert get_strategy_api(v1).get_last_universe()["symbol"].to_list() == ["btc-usdt", "eth-usdt"]
