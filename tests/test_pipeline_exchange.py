"""Assets that read the exchange, materialised against the real simulator (REST on a loopback port)."""

import asyncio
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from builders import bar_check_keys, market, universe_def, window_stats_without_checks

from collectors import history
from lsq.config import Settings
from lsq.exchange import rest_client
from lsq.stores.panels import day_file, load_panel
from lsq.stores.universes import read_universe, universe_days, write_universe
from lsq.timelabels import DAY_MS, WINDOW_MS, day_start, format_day, now_ms, parse_day, partition_key
from lsq.universes import KLINES_PER_REQUEST, past_day_volumes
from lsq_pipeline.defs.market import checks
from lsq_pipeline.defs.market.assets import fetch_by_universe
from lsq_pipeline.defs.market.exchange_data import fetch_premium_index
from lsq_pipeline.defs.market.keys import PREMIUM_INDEX_5M
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

MARKET = market()
universe_asset = universe_def()


@pytest.fixture(scope="module")
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield instance


def resource_for(settings: Settings, data_dir: Path, tmp_path: Path, **universe_rules: int) -> LsqResource:
    """An lsq resource on the simulator with its own data directory and universe rules."""
    config = tmp_path / "lsq.yaml"
    config.write_text(yaml.safe_dump({"data": {"universe": {"top_n": 3, "min_listing_days": 30, **universe_rules}}}))
    local = settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": data_dir})})
    return LsqResource.for_settings(local, config_path=str(config))


def test_universe_versions_from_exchange_info(settings: Settings, tmp_path: Path, instance) -> None:
    lsq = resource_for(settings, tmp_path / "data", tmp_path)
    day = format_day(now_ms())
    dg.materialize([universe_asset], instance=instance, partition_key=day, resources={"lsq": lsq})
    v1, v2 = read_universe(lsq.paths, day, "v1"), read_universe(lsq.paths, day, "v2")
    info = {s["symbol"]: s for s in rest_client(settings).futures_exchange_info()["symbols"]}
    assert v1.height > 0
    for row in v1.iter_rows(named=True):
        s = info[row["symbol"]]
        assert (s["status"], s["contractType"], s["quoteAsset"]) == ("TRADING", "PERPETUAL", "USDT")
        tick = next(f["tickSize"] for f in s["filters"] if f["filterType"] == "PRICE_FILTER")
        assert row["tick_size"] == pl.Series([tick]).cast(pl.Decimal(38, 8))[0]
    excluded = {s for s, v in info.items() if v["quoteAsset"] != "USDT" or v["contractType"] != "PERPETUAL"}
    assert excluded and not excluded & set(v1["symbol"])
    # today's v2 ranks by yesterday's complete UTC day (point in time: no look-ahead in a backfilled universe)
    client = rest_client(settings)
    yesterday = parse_day(day) - DAY_MS
    volumes = {
        s: float(client.futures_klines(symbol=s, interval="1d", startTime=yesterday, limit=1)[0][7])
        for s in v1["symbol"]
    }
    assert v2.height == 3 and set(v2["symbol"]) <= set(v1["symbol"])
    ranked = sorted(v1["symbol"], key=lambda s: (-volumes[s], s))
    assert sorted(v2["symbol"]) == sorted(ranked[:3])

    # A later day with a stricter listing age: v2 empties, the older day stays readable unchanged.
    strict = resource_for(settings, tmp_path / "data", tmp_path, min_listing_days=100_000)
    next_day = format_day(now_ms() + DAY_MS)
    dg.materialize([universe_asset], instance=instance, partition_key=next_day, resources={"lsq": strict})
    assert read_universe(strict.paths, next_day, "v2").height == 0
    assert read_universe(strict.paths, day, "v2").equals(v2)
    assert universe_days(strict.paths, "v2") == [day, next_day]


def test_day_volumes_over_months_equal_each_days_own_kline(settings: Settings) -> None:
    """A range of universes reads 1d klines in pages of KLINES_PER_REQUEST days; every day, on both sides of a page
    boundary, gets the volume of its own previous day."""
    client = rest_client(settings)
    today = day_start(now_ms())
    days = [today - k * DAY_MS for k in range(KLINES_PER_REQUEST + 21, 0, -1)]
    symbols = ["BTCUSDT", "ETHUSDT"]
    volumes = past_day_volumes(client, symbols, days)
    assert sorted(volumes) == days
    for day in (days[0], days[KLINES_PER_REQUEST - 1], days[KLINES_PER_REQUEST], days[-1]):
        own = []
        for symbol in symbols:
            (kline,) = client.futures_klines(symbol=symbol, interval="1d", startTime=day - DAY_MS, limit=1)
            assert int(kline[0]) == day - DAY_MS
            own.append({"symbol": symbol, "quoteVolume": kline[7]})
        assert volumes[day] == own


def test_a_range_of_universe_days_is_one_run_equal_to_day_by_day(settings: Settings, tmp_path: Path) -> None:
    """A backfill builds many days' universes in one run, each exactly as a run of that day alone would."""
    days = [format_day(day_start(now_ms()) - k * DAY_MS) for k in (3, 2, 1)]
    ranged = resource_for(settings, tmp_path / "ranged", tmp_path)
    single = resource_for(settings, tmp_path / "single", tmp_path)
    tags = {RANGE_START_TAG: days[0], RANGE_END_TAG: days[-1]}
    with dg.instance_for_test() as instance:
        result = dg.materialize([universe_asset], instance=instance, tags=tags, resources={"lsq": ranged})
        assert result.success and len(instance.get_runs()) == 1
        assert sorted(instance.get_materialized_partitions(universe_asset.key)) == days
        for day in days:
            dg.materialize([universe_asset], instance=instance, partition_key=day, resources={"lsq": single})
            for version in ("v1", "v2"):
                assert read_universe(ranged.paths, day, version).equals(read_universe(single.paths, day, version))


def test_premium_index_and_funding(settings: Settings, tmp_path: Path, instance) -> None:
    lsq = resource_for(settings, tmp_path / "data", tmp_path)
    today = format_day(now_ms())
    dg.materialize([universe_asset], instance=instance, partition_key=today, resources={"lsq": lsq})
    symbols = read_universe(lsq.paths, today)["symbol"].to_list()
    window = day_start(now_ms()) + 0  # the first window of today: closed and complete
    dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        partition_key=partition_key(window),
        resources={"lsq": lsq},
        selection=[PREMIUM_INDEX_5M],
    )
    stored = load_panel("premium_index", window, window + WINDOW_MS, paths=lsq.paths)
    assert sorted(stored["symbol"]) == sorted(symbols)
    btc = rest_client(settings).futures_premium_index_klines(
        symbol="BTCUSDT", interval="5m", startTime=window, endTime=window + WINDOW_MS - 1
    )
    row = stored.filter(pl.col("symbol") == "BTCUSDT").row(0, named=True)
    assert (row["open_time"], row["close"]) == (btc[0][0], float(btc[0][4]))

    yesterday = format_day(now_ms() - DAY_MS)
    dg.materialize([universe_asset], instance=instance, partition_key=yesterday, resources={"lsq": lsq})
    dg.materialize([MARKET.funding_rates], instance=instance, partition_key=yesterday, resources={"lsq": lsq})
    funding = load_panel("funding", day_start(now_ms()) - DAY_MS, day_start(now_ms()), paths=lsq.paths)
    for symbol in symbols:
        events = funding.filter(pl.col("symbol") == symbol)
        expected = rest_client(settings).futures_funding_rate(
            symbol=symbol, startTime=day_start(now_ms()) - DAY_MS, endTime=day_start(now_ms()) - 1, limit=1000
        )
        assert events["funding_time"].to_list() == [e["fundingTime"] for e in expected]
        assert events.height >= 3  # every symbol settles at least every 8 hours


def test_a_range_of_premium_index_uses_each_days_universe(settings: Settings, tmp_path: Path, instance) -> None:
    """Days with the same universe are fetched together; every day still gets exactly its own universe's rows."""
    first = day_start(now_ms()) - 3 * DAY_MS
    days = [format_day(first + k * DAY_MS) for k in range(3)]
    lsq = resource_for(settings, tmp_path / "data", tmp_path)
    dg.materialize([universe_asset], instance=instance, partition_key=days[-1], resources={"lsq": lsq})
    few = read_universe(lsq.paths, days[-1]).head(3)  # three symbols keep the simulator's work small
    dropped = few["symbol"][0]
    write_universe(lsq.paths, days[0], "v1", few.filter(pl.col("symbol") != dropped))
    for day in days[1:]:
        write_universe(lsq.paths, day, "v1", few)
    frame = fetch_by_universe(lsq, fetch_premium_index, first, first + 3 * DAY_MS)
    client = rest_client(settings)
    for day in days:
        lo = parse_day(day)
        stored = frame.filter(pl.col("open_time").is_between(lo, lo + DAY_MS, closed="left"))
        universe = read_universe(lsq.paths, day)["symbol"].to_list()
        assert sorted(stored["symbol"].unique()) == sorted(universe) and (day != days[0] or dropped not in universe)
        assert stored.group_by("symbol").len()["len"].to_list() == [DAY_MS // WINDOW_MS] * len(universe)
        symbol = universe[-1]
        rows = [
            r
            for start, stop, limit in ((lo, lo + DAY_MS // 2 - 1, 144), (lo + DAY_MS // 2, lo + DAY_MS - 1, 144))
            for r in client.futures_premium_index_klines(
                symbol=symbol, interval="5m", startTime=start, endTime=stop, limit=limit
            )
        ]
        mine = stored.filter(pl.col("symbol") == symbol).sort("open_time")
        assert mine["open_time"].to_list() == [r[0] for r in rows]
        assert mine["close"].to_list() == [float(r[4]) for r in rows]


@pytest.mark.slow
def test_parity_check_against_exchange_klines(settings: Settings, tmp_path: Path, instance) -> None:
    lsq = resource_for(settings, tmp_path / "data", tmp_path)
    today = format_day(now_ms())
    dg.materialize([universe_asset], instance=instance, partition_key=today, resources={"lsq": lsq})
    symbols = read_universe(lsq.paths, today)["symbol"].to_list()
    window = day_start(now_ms())
    asyncio.run(history.backfill(lsq.settings, symbols, window - WINDOW_MS, window + 2 * WINDOW_MS))
    parity = [k for k in bar_check_keys() if k.name == "bars_match_exchange_klines"]
    resources = {"lsq": lsq}

    def run() -> bool:
        result = dg.materialize(
            [MARKET.window_stats_5m],
            instance=instance,
            partition_key=partition_key(window + WINDOW_MS),
            resources=resources,
            selection=window_stats_without_checks() | dg.AssetSelection.checks(*parity),
            raise_on_error=False,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation.passed

    assert run() is True
    # Corrupt the stored bars of the sampled symbols: the check (run alone) must now fail.
    sampled_all = checks.sample_symbols(symbols, seed=window + WINDOW_MS)
    path = day_file(lsq.paths, "bars", window)
    frame = pl.read_parquet(path)
    bumped = pl.col("symbol").is_in(sampled_all) & (pl.col("open_time") == window + WINDOW_MS)
    frame.with_columns(
        pl.when(bumped).then(pl.col("volume") * 2).otherwise(pl.col("volume")).alias("volume")
    ).write_parquet(path)
    key = partition_key(window + WINDOW_MS)
    check_only = dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        tags={RANGE_START_TAG: key, RANGE_END_TAG: key},
        resources=resources,
        selection=dg.AssetSelection.checks(*parity),
        raise_on_error=False,
    )
    assert {e.partition: e.passed for e in check_only.get_asset_check_evaluations()} == {key: False, None: False}


def test_without_a_stored_universe_every_usdt_perpetual_is_fetched(
    settings: Settings, tmp_path: Path, instance
) -> None:
    lsq = resource_for(settings, tmp_path / "data", tmp_path)
    window = day_start(now_ms())
    dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        partition_key=partition_key(window),
        resources={"lsq": lsq},
        selection=[PREMIUM_INDEX_5M],
    )
    stored = load_panel("premium_index", window, window + WINDOW_MS, paths=lsq.paths)
    info = rest_client(settings).futures_exchange_info()["symbols"]
    perpetuals = {
        s["symbol"]
        for s in info
        if (s["status"], s["contractType"], s["quoteAsset"]) == ("TRADING", "PERPETUAL", "USDT")
    }
    assert set(stored["symbol"]) == perpetuals


def test_a_mode_override_outside_the_three_is_named(tmp_path: Path) -> None:
    resource = LsqResource(data_dir=str(tmp_path), mode="paper")
    with pytest.raises(ValueError, match="mode 'paper' must be one of mock, testnet, live"):
        _ = resource.settings
