"""Bars, trade statistics, rollups and checks materialised with Dagster on real Parquet files (no exchange needed)."""

import socket
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from builders import bar_check_keys, market, universe_frame, window_stats_without_checks

from lsq.aggregation.windows import compute_window_stats
from lsq.paths import DataPaths
from lsq.stores.panels import day_file, load_panel
from lsq.stores.universes import write_universe
from lsq.timelabels import (
    DAY_MS,
    HOUR_MS,
    WINDOW_MS,
    day_start,
    format_day,
    parse_partition_key,
    partition_key,
    to_datetime,
)
from lsq.tradestore import TradeStore
from lsq_pipeline.defs.market import assets as market_assets_module
from lsq_pipeline.defs.market import checks
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

T0 = parse_partition_key("2026-11-20-10:00")
MARKET = market()
UNIVERSE = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # SOLUSDT never trades: exempt until its first trade
QUIET = {("ETHUSDT", 3), ("ETHUSDT", 4), ("BTCUSDT", 7)}  # (symbol, window index) without trades


def synthetic_trades(symbol: str, start_ms: int, windows: int, seed: int, first_id: int = 1) -> pl.DataFrame:
    """Random aggTrades over `windows` 5-minute windows, skipping the QUIET ones; ids contiguous."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(start_ms, start_ms + windows * WINDOW_MS, 40 * windows))
    index = (times - start_ms) // WINDOW_MS
    keep = np.array([(symbol, int(i)) not in QUIET for i in index])
    times = times[keep]
    n = len(times)
    ticks = 3_000_000 + np.cumsum(rng.integers(-3, 4, n))
    multiplicity = rng.integers(1, 4, n)
    last = first_id - 1 + np.cumsum(multiplicity)
    return pl.DataFrame(
        {
            "agg_trade_id": np.arange(first_id, first_id + n),
            "price": [f"{t / 100:.2f}" for t in ticks],
            "quantity": [f"{q / 1000:.3f}" for q in rng.integers(1, 5000, n)],
            "first_trade_id": last - multiplicity + 1,
            "last_trade_id": last,
            "transact_time": times,
            "is_buyer_maker": rng.random(n) < 0.5,
        }
    )


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    paths = DataPaths(tmp_path / "data")
    store = TradeStore(paths)
    raw = []
    for i, symbol in enumerate(UNIVERSE[:2]):
        trades = synthetic_trades(symbol, T0, 24, seed=i)
        store.write_part(symbol, trades)
        raw.append(trades.with_columns(pl.lit(symbol).alias("symbol")))
    for version in ("v1", "v2"):  # v2 (traded) is what the coverage check validates
        write_universe(paths, "2026-11-20", version, universe_frame(UNIVERSE))
    pl.concat(raw).write_parquet(paths.root / "raw.parquet")
    return paths


@pytest.fixture(scope="module")
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield instance


def run_windows(paths: DataPaths, instance: dg.DagsterInstance, first: int, last: int) -> dg.ExecuteInProcessResult:
    """One run over the partition range [first, last] (window starts), as the sensor's catch-up or a backfill does."""
    tags = {RANGE_START_TAG: partition_key(first), RANGE_END_TAG: partition_key(last)}
    return dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        resources={"lsq": LsqResource(data_dir=str(paths.root))},
        tags=tags,
        selection=window_stats_without_checks(),
    )


def expected_bars(paths: DataPaths) -> pl.DataFrame:
    """Independent expectation from the raw trades: per (symbol, window) OHLC, volume and taker-buy volume."""
    raw = pl.read_parquet(paths.root / "raw.parquet").with_columns(pl.col("price", "quantity").cast(pl.Decimal(38, 8)))
    return (
        raw.with_columns((pl.col("transact_time") - pl.col("transact_time") % WINDOW_MS).alias("open_time"))
        .sort("agg_trade_id")
        .group_by("symbol", "open_time")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("quantity").sum().alias("volume"),
            pl.col("quantity").filter(~pl.col("is_buyer_maker")).sum().alias("buyvolume"),
            (pl.col("last_trade_id") - pl.col("first_trade_id") + 1).sum().alias("tradecount"),
        )
    )


def test_one_window_materialises_bars_and_tran_stats(paths: DataPaths, instance: dg.DagsterInstance) -> None:
    result = dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        partition_key="2026-11-20-10:00",
        resources={"lsq": LsqResource(data_dir=str(paths.root))},
        selection=window_stats_without_checks(),
    )
    events = {e.asset_key.path[0]: e for e in result.get_asset_materialization_events()}
    assert set(events) == {"bars_5m", "tran_stats_5m"}
    bars = load_panel("bars", T0, T0 + WINDOW_MS, paths=paths)
    assert bars["symbol"].to_list() == ["BTCUSDT", "ETHUSDT"]
    expected = expected_bars(paths).filter(pl.col("open_time") == T0).sort("symbol")
    for col in ("open", "high", "low", "close", "volume", "buyvolume", "tradecount"):
        assert bars[col].cast(pl.String).to_list() == expected[col].cast(bars.schema[col]).cast(pl.String).to_list()
    stats = load_panel("tran_stats", T0, T0 + WINDOW_MS, paths=paths)
    assert stats.select("symbol", "open_time").equals(bars.select("symbol", "open_time"))
    assert (stats["buy_volume"] == bars["buyvolume"]).all()
    assert events["bars_5m"].materialization.metadata["rows"].value == 2


def test_range_run_fills_quiet_windows_and_equals_window_by_window(
    paths: DataPaths, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = run_windows(paths, instance, T0, T0 + 11 * WINDOW_MS)
    assert result.success
    bars = load_panel("bars", T0, T0 + HOUR_MS, paths=paths)
    assert bars.height == 2 * 12
    eth = bars.filter(pl.col("symbol") == "ETHUSDT").sort("open_time")
    assert eth["span_status"][3] == eth["span_status"][4] == "NoTrade"
    for i in (3, 4):
        assert eth["open"][i] == eth["high"][i] == eth["low"][i] == eth["close"][i] == eth["close"][2]
        assert eth["volume"][i] == 0
    # The same windows one run each, in a fresh data directory, store identical bars.
    other = DataPaths(tmp_path / "other")
    for sub in ("trades", "universe"):
        (other.root / sub).parent.mkdir(parents=True, exist_ok=True)
        (other.root / sub).symlink_to(paths.root / sub)
    for i in range(12):
        key = partition_key(T0 + i * WINDOW_MS)
        dg.materialize(
            [MARKET.window_stats_5m],
            instance=instance,
            partition_key=key,
            resources={"lsq": LsqResource(data_dir=str(other.root))},
            selection=window_stats_without_checks(),
        )
    assert load_panel("bars", T0, T0 + HOUR_MS, paths=other).equals(bars)


def test_a_range_over_several_validated_batches_stores_one_computation_of_the_range(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range run validates and stores VALIDATED_DAYS days at a time (here 2): over three day chunks (22:00 to the
    second midnight and on to 02:00), what it stores equals the whole range computed in one call."""
    monkeypatch.setattr(market_assets_module, "VALIDATED_DAYS", 2)
    start = day_start(T0) - 2 * HOUR_MS
    end = day_start(T0) + DAY_MS + 2 * HOUR_MS
    paths = DataPaths(tmp_path / "data")
    for i, symbol in enumerate(UNIVERSE[:2]):
        TradeStore(paths).write_part(symbol, synthetic_trades(symbol, start, (end - start) // WINDOW_MS, seed=i))
    for day in range(day_start(start), end, DAY_MS):
        write_universe(paths, format_day(day), "v2", universe_frame(UNIVERSE))
    assert run_windows(paths, instance, start, end - WINDOW_MS).success
    expected = compute_window_stats(
        paths, start, end, LsqResource(data_dir=str(paths.root)).settings.data.tran_stats.thresholds_usd
    )
    for kind, frame in zip(("bars", "tran_stats"), expected, strict=True):
        stored = load_panel(kind, start, end, paths=paths)
        assert stored.height == 2 * (end - start) // WINDOW_MS
        assert stored.equals(frame.sort("symbol", "open_time").select(stored.columns))


def run_local_checks(
    paths: DataPaths, instance: dg.DagsterInstance, first: int, last: int, raise_on_error: bool = True
) -> tuple[list[dg.AssetCheckKey], dg.ExecuteInProcessResult]:
    """The bar checks that need no exchange, alone (the stored bars re-checked), as one range run over the windows
    [first, last]."""
    local = [k for k in bar_check_keys() if k.name != "bars_match_exchange_klines"]
    tags = {RANGE_START_TAG: partition_key(first), RANGE_END_TAG: partition_key(last)}
    result = dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        resources={"lsq": LsqResource(data_dir=str(paths.root))},
        tags=tags,
        selection=dg.AssetSelection.checks(*local),
        raise_on_error=raise_on_error,
    )
    return local, result


def run_checks(paths: DataPaths, instance: dg.DagsterInstance, first: int, last: int) -> dict[str, bool]:
    _, result = run_local_checks(paths, instance, first, last)
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def corrupt(paths: DataPaths, change: pl.Expr, where: pl.Expr) -> None:
    path = day_file(paths, "bars", T0 - T0 % (24 * HOUR_MS))
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(where).then(change).otherwise(pl.col(change.meta.output_name()))).write_parquet(path)


def test_checks_pass_on_good_bars_and_fail_on_corrupted_ones(paths: DataPaths, instance: dg.DagsterInstance) -> None:
    run_windows(paths, instance, T0, T0 + 11 * WINDOW_MS)
    last = T0 + 11 * WINDOW_MS
    assert run_checks(paths, instance, T0, last) == dict.fromkeys(
        [
            "bars_universe_coverage",
            "bars_ohlc_sane",
            "bars_volumes_non_negative",
            "bars_buy_sell_sum",
            "bars_no_trade_fill",
            "trades_contiguous",
        ],
        True,
    )
    btc5 = (pl.col("symbol") == "BTCUSDT") & (pl.col("open_time") == T0 + 5 * WINDOW_MS)
    corrupt(paths, (pl.col("low") - 1).alias("high"), btc5)
    eth_quiet = (pl.col("symbol") == "ETHUSDT") & (pl.col("open_time") == T0 + 4 * WINDOW_MS)
    corrupt(paths, (pl.col("close") + 1).alias("close"), eth_quiet)
    corrupt(paths, (pl.col("buyvolume") + 1).alias("buyvolume"), btc5)
    results = run_checks(paths, instance, T0, last)
    assert results["bars_ohlc_sane"] is False
    assert results["bars_no_trade_fill"] is False
    assert results["bars_buy_sell_sum"] is False
    assert results["bars_universe_coverage"] is True
    assert results["bars_volumes_non_negative"] is True


def test_coverage_check_fails_when_a_universe_symbol_is_missing(paths: DataPaths, instance) -> None:
    run_windows(paths, instance, T0, T0 + 2 * WINDOW_MS)
    path = day_file(paths, "bars", T0 - T0 % (24 * HOUR_MS))
    stored = pl.read_parquet(path)
    stored.filter(~((pl.col("symbol") == "ETHUSDT") & (pl.col("open_time") == T0 + WINDOW_MS))).write_parquet(path)
    assert run_checks(paths, instance, T0, T0 + 2 * WINDOW_MS)["bars_universe_coverage"] is False
    pl.concat([stored, stored.head(1)]).write_parquet(path)
    assert run_checks(paths, instance, T0, T0 + 2 * WINDOW_MS)["bars_universe_coverage"] is False


def test_trade_id_gap_fails_the_contiguity_check(paths: DataPaths, instance) -> None:
    gap = synthetic_trades("XRPUSDT", T0, 1, seed=9, first_id=100)
    TradeStore(paths).write_part("XRPUSDT", gap.filter(pl.col("agg_trade_id") != 105))
    run_windows(paths, instance, T0, T0)
    assert run_checks(paths, instance, T0, T0)["trades_contiguous"] is False


def test_rollups_materialise_once_all_their_windows_exist(paths: DataPaths, instance) -> None:
    """AutomationCondition.eager(): an hour's rollups are requested only when its 12 windows are stored."""
    with dg.instance_for_test() as fresh:
        defs = dg.Definitions(
            assets=[MARKET.window_stats_5m, *MARKET.rollups], resources={"lsq": LsqResource(data_dir=str(paths.root))}
        )
        after_hour = to_datetime(T0 + HOUR_MS) + timedelta(minutes=1)
        run_windows(paths, fresh, T0, T0 + 10 * WINDOW_MS)
        partial = dg.evaluate_automation_conditions(defs=defs, instance=fresh, evaluation_time=after_hour)
        assert partial.total_requested == 0
        run_windows(paths, fresh, T0 + 11 * WINDOW_MS, T0 + 11 * WINDOW_MS)
        full = dg.evaluate_automation_conditions(
            defs=defs, instance=fresh, evaluation_time=after_hour, cursor=partial.cursor
        )
        requested = {k.path[0]: full.get_requested_partitions(k) for k in (dg.AssetKey("bars_1h"),)}
        assert requested["bars_1h"] == {"2026-11-20-10:00"}
        assert full.get_requested_partitions(dg.AssetKey("tran_stats_1h")) == {"2026-11-20-10:00"}
        assert full.get_requested_partitions(dg.AssetKey("bars_4h")) == set()  # 08:00-12:00 is incomplete

        hourly = [a for a in MARKET.rollups if a.key.path[0] in ("bars_1h", "tran_stats_1h")]
        dg.materialize(
            [*hourly],
            instance=fresh,
            partition_key="2026-11-20-10:00",
            resources={"lsq": LsqResource(data_dir=str(paths.root))},
        )
        stored = load_panel("bars", T0, T0 + HOUR_MS, period="1h", paths=paths)
        five = load_panel("bars", T0, T0 + HOUR_MS, paths=paths)
        assert stored.height == 2
        btc5 = five.filter(pl.col("symbol") == "BTCUSDT")
        btc = stored.row(0, named=True)
        assert btc["volume"] == btc5["volume"].sum() and btc["close"] == btc5["close"][-1]
        assert btc["high"] == btc5["high"].max() and btc["open"] == btc5["open"][0]


def check_statuses(instance: dg.DagsterInstance, name: str, run_id: str) -> dict[str | None, str]:
    """Partition -> recorded status of check `name` of bars_5m in run `run_id` (as the Checks tab reads them)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("bars_5m"), name), limit=10_000
    )
    return {r.partition: r.status.value for r in history if r.run_id == run_id}


def test_a_range_run_records_a_real_result_for_every_window(paths: DataPaths, instance: dg.DagsterInstance) -> None:
    """A backfill checks its range at once; every window still gets its own result, none reads "Skipped"."""
    run_windows(paths, instance, T0, T0 + 11 * WINDOW_MS)
    corrupt(
        paths,
        (pl.col("low") - 1).alias("high"),
        (pl.col("symbol") == "BTCUSDT") & (pl.col("open_time") == T0 + 5 * WINDOW_MS),
    )
    local, result = run_local_checks(paths, instance, T0, T0 + 11 * WINDOW_MS, raise_on_error=False)
    keys = [partition_key(T0 + i * WINDOW_MS) for i in range(12)]
    for check in local:
        name = check.name
        statuses = check_statuses(instance, name, result.run_id)
        expected = {k: "FAILED" if name == "bars_ohlc_sane" and k == keys[5] else "SUCCEEDED" for k in keys}
        summary = statuses.pop(None)  # the range's own result, which says what it covered
        assert statuses == expected, name
        assert summary == ("FAILED" if name == "bars_ohlc_sane" else "SUCCEEDED")
    (ohlc,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "bars_ohlc_sane" and not e.partition]
    assert f"range {keys[0]}...{keys[-1]} (12 windows) checked as one: 1 windows failing" in ohlc.description


def test_long_ranges_record_the_failing_windows_and_the_newest() -> None:
    keys = [partition_key(T0 + i * WINDOW_MS) for i in range(checks.PER_WINDOW_RANGE + 200)]
    recent = keys[: checks.PER_WINDOW_RANGE]  # a fresh start's backfill: every window
    assert checks.windows_to_record(recent, []) == recent
    assert checks.windows_to_record(keys, [keys[7], keys[3]]) == [keys[3], keys[7], keys[-1]]
    assert len(checks.windows_to_record(keys, keys[:150])) == checks.MAX_WINDOW_RESULTS + 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parity_check_degrades_to_a_warning_when_the_exchange_is_unreachable(
    paths: DataPaths, instance: dg.DagsterInstance
) -> None:
    """An exchange outage must not stop the window: 'could not verify' (WARN, with the reason), the run succeeds."""
    unreachable = LsqResource(data_dir=str(paths.root), mode="mock", rest_url=f"http://127.0.0.1:{_closed_port()}")
    parity = [k for k in bar_check_keys() if k.name == "bars_match_exchange_klines"]
    window = {"dagster/partition": partition_key(T0)}
    stretch = {RANGE_START_TAG: partition_key(T0), RANGE_END_TAG: partition_key(T0 + 2 * WINDOW_MS)}
    for tags, newest in ((window, partition_key(T0)), (stretch, partition_key(T0 + 2 * WINDOW_MS))):
        result = dg.materialize(
            [MARKET.window_stats_5m],
            instance=instance,
            resources={"lsq": unreachable},
            tags=tags,
            selection=window_stats_without_checks() | dg.AssetSelection.checks(*parity),
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        outcome = result.get_asset_check_evaluations()[-1]  # the check's own result comes last
        assert outcome.passed is False and outcome.severity == dg.AssetCheckSeverity.WARN
        assert "could not verify" in outcome.description and "ConnectionError" in outcome.description
        # recorded for the newest window (with WARN severity), not "Skipped"
        assert check_statuses(instance, "bars_match_exchange_klines", result.run_id)[newest] == "FAILED"


def test_a_check_that_cannot_run_is_a_failed_result_not_a_failed_step(
    paths: DataPaths, instance: dg.DagsterInstance
) -> None:
    """Re-checking a window whose bars were never stored: each check fails saying why; the step itself succeeds (only
    the blocking parity check may stop a window)."""
    local, result = run_local_checks(paths, instance, T0, T0, raise_on_error=False)
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {k.name for k in local}
    assert evaluations.pop("trades_contiguous").passed  # reads the trades, which are stored
    for evaluation in evaluations.values():
        assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "could not run: ValueError: no stored 5-minute bars" in (evaluation.description or "")
