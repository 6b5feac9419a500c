"""The factor stage in Dagster against the simulator: universe, then bars -> factors -> alpha -> target_positions for
one window in one run, and the files on disk agree with the assets' metadata."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml
from builders import market, pinned_settings, universe_def, without_bar_checks

from factors.discovery import discover
from factors.engine import alpha_file, factor_dir
from lsq.exchange import rest_client
from lsq.paths import DataPaths
from lsq.symbols import to_exchange
from lsq.timelabels import WINDOW_MS, format_day, now_ms, partition_key, window_start
from lsq.tradestore import TradeStore
from lsq_pipeline.defs.factors.assets import build_factor_assets, factor_key
from lsq_pipeline.defs.market.keys import BARS_5M, FUNDING_RATES, PREMIUM_INDEX_5M, TRAN_STATS_5M
from lsq_pipeline.defs.universe.assets import UNIVERSE
from lsq_pipeline.partitions import partitions_for
from lsq_pipeline.resources import LsqResource

FIVE_MINUTE = partitions_for(pinned_settings()).five_minute
MARKET = market()

BROKEN = """
from factors.calculator import AlphaCalculatorBase

class Broken(AlphaCalculatorBase):
    name = "broken"

    def run(self, view):
        raise RuntimeError("broken on purpose")

CALCULATOR_INSTANCE = Broken()
"""


def write_trades(paths: DataPaths, prices: dict[str, float], window: int, seed: int = 3) -> None:
    """60 aggTrades per symbol inside `window`, a random walk around the exchange's last price."""
    rng = np.random.default_rng(seed)
    store = TradeStore(paths)
    for symbol, price in prices.items():
        n = 60
        walk = price * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
        notional = rng.lognormal(8, 1.5, n)
        store.write_part(
            symbol,
            pl.DataFrame(
                {
                    "agg_trade_id": np.arange(1, n + 1),
                    "price": [f"{p:.2f}" for p in walk],
                    "quantity": [f"{q:.3f}" for q in np.maximum(notional / walk, 0.001)],
                    "first_trade_id": np.arange(1, n + 1),
                    "last_trade_id": np.arange(1, n + 1),
                    "transact_time": np.sort(rng.integers(window, window + WINDOW_MS, n)),
                    "is_buyer_maker": rng.random(n) < 0.5,
                }
            ),
        )


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key == dg.AssetKey(key):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{key} was not materialised")


def sized_with(settings: Any, tmp_path: Path, refused: set[str]) -> LsqResource:
    """A resource whose configuration gives the accounts in `refused` a secret the simulator rejects."""
    accounts = [
        {
            "account_id": a.account_id,
            "api_key": a.api_key.get_secret_value(),
            "api_secret": "wrong" if a.account_id in refused else a.api_secret.get_secret_value(),
            "starting_balance_usdt": a.starting_balance_usdt,
        }
        for a in settings.execution.mock.accounts
    ]
    config = tmp_path / f"accounts-{'-'.join(sorted(refused))}.yaml"
    config.write_text(yaml.safe_dump({"execution": {"mock": {"accounts": accounts}}}))
    return LsqResource.for_settings(settings, config_path=str(config))


@pytest.fixture
def calculators(tmp_path: Path) -> list:
    folder = tmp_path / "calcs"
    folder.mkdir()
    (folder / "broken.py").write_text(BROKEN)
    shipped, problems = discover()
    extra, extra_problems = discover([folder])
    assert not problems and not extra_problems
    return [*shipped, *extra]


def test_window_run_writes_factors_alpha_and_positions_matching_metadata(
    sim_server: Any, tmp_path: Path, calculators: list
) -> None:
    data_dir = tmp_path / "data"
    settings = sim_server.settings.model_copy(
        update={"data": sim_server.settings.data.model_copy(update={"data_dir": data_dir})}
    )
    paths = DataPaths(data_dir)
    lsq = LsqResource.for_settings(settings)
    window = window_start(now_ms()) - 2 * WINDOW_MS
    client = rest_client(settings)
    prices = {t["symbol"]: float(t["lastPrice"]) for t in client.futures_ticker()}
    write_trades(paths, prices, window)
    assets = build_factor_assets(calculators, settings.strategy.history_days, FIVE_MINUTE)
    with dg.instance_for_test() as instance:
        day = dg.materialize(
            [universe_def()], instance=instance, partition_key=format_day(window), resources={"lsq": lsq}
        )
        assert day.success
        run = dg.materialize(
            [MARKET.window_stats_5m, *assets],
            instance=instance,
            partition_key=partition_key(window),
            resources={"lsq": lsq},
            selection=without_bar_checks(),  # synthetic trades: not the exchange's klines
            raise_on_error=False,
        )
        assert run.success, [e.message for e in run.all_events if e.is_failure]
        # every check's result lands on the window it was planned for: none reads "Skipped" in the UI
        for evaluation in run.get_asset_check_evaluations():
            records = instance.event_log_storage.get_asset_check_execution_history(evaluation.asset_check_key, 10)
            status = "SUCCEEDED" if evaluation.passed else "FAILED"
            assert {(r.status.value, r.partition) for r in records} == {(status, partition_key(window))}
    checks = {e.asset_key.to_user_string(): e.passed for e in run.get_asset_check_evaluations()}
    assert checks == {
        **{factor_key(c.name).to_user_string(): c.name != "broken" for c in calculators},
        "target_positions": True,  # accounts_sized: every account was sized
    }

    # Every calculator has a factor asset whose metadata matches its stored vector; the broken one is isolated.
    folder = factor_dir(paths, window)
    for calc in calculators:
        meta = metadata_of(run, factor_key(calc.name).to_user_string())
        record = json.loads((folder / f"{calc.name}.json").read_text())
        assert meta["status"] == record["status"]
        if record["status"] == "ok":
            assert meta["symbols"] == pl.read_parquet(folder / f"{calc.name}.parquet").height
    assert metadata_of(run, "factor_broken")["status"] == "failed"
    assert "broken on purpose" in metadata_of(run, "factor_broken")["error"]
    assert metadata_of(run, "factor_testnet_volume_rank")["symbols"] == len(prices)

    alpha_meta = metadata_of(run, "alpha")
    alpha = pl.read_parquet(alpha_file(paths, window))
    assert alpha_meta["symbols"] == alpha.height > 0
    assert alpha["weight"].abs().sum() == pytest.approx(1.0)
    assert "broken" in alpha_meta["failures"]

    # Positions: one file per mock account, listed in the metadata, sized from the simulator's real equity.
    meta = metadata_of(run, "target_positions")
    files = [Path(p) for p in meta["files"]]
    accounts = {a.account_id: a.starting_balance_usdt for a in settings.execution.mock.accounts}
    assert sorted(f.name.split("_target_positions_")[0] for f in files) == sorted(accounts)
    info = {s["symbol"]: s for s in client.futures_exchange_info()["symbols"]}
    for file in files:
        doc = json.loads(file.read_text())
        account = doc["account_id"]
        assert Decimal(doc["capital"]) == Decimal(str(accounts[account]))
        assert meta["capital"][account] == float(doc["capital"])
        gross = sum(abs(p["target_notional"]) for p in doc["positions"])
        assert meta["gross_notional"][account] == pytest.approx(gross)
        assert doc["timestamp"] == window + WINDOW_MS and doc["partition"] == partition_key(window)
        assert gross <= float(doc["capital"]) * settings.execution.sizing.gross_leverage + 1e-6
        traded = [p for p in doc["positions"] if Decimal(p["target_position"]) != 0]
        assert traded, "some positions must be non-zero"
        weights = dict(alpha.iter_rows())
        for p in doc["positions"]:
            lot = next(f for f in info[p["symbol"]]["filters"] if f["filterType"] == "LOT_SIZE")
            qty = Decimal(p["target_position"])
            assert qty % Decimal(lot["stepSize"]) == 0
            if qty:
                weight = next(w for s, w in weights.items() if to_exchange(s) == p["symbol"])
                assert (qty > 0) == (weight > 0)

    # The history the calculators saw is in the metadata; a fresh data directory holds less than asked for.
    history = metadata_of(run, "alpha")["history"]
    assert history["days_asked"] == settings.strategy.history_days and history["short"] is True
    assert "lsq backfill --history" in metadata_of(run, "alpha")["history_note"]
    assert metadata_of(run, f"factor_{calculators[0].name}")["history"] == history

    # One account's keys are refused: the other's targets are written, the step succeeds, the check warns.
    sizing_only = [a for a in assets if dg.AssetKey("target_positions") in a.keys]
    one_bad = sized_with(settings, tmp_path, {"sim_beta"})
    with dg.instance_for_test() as instance:
        partial = dg.materialize(
            sizing_only, instance=instance, partition_key=partition_key(window), resources={"lsq": one_bad}
        )
        assert partial.success
        accounts = metadata_of(partial, "target_positions")["accounts"]
        assert accounts["sim_alpha"]["status"] == "written" and Path(accounts["sim_alpha"]["path"]).exists()
        assert accounts["sim_beta"]["status"] == "failed" and accounts["sim_beta"]["reason"]
        (check,) = partial.get_asset_check_evaluations()
        assert check.check_name == "accounts_sized" and check.passed is False
        assert check.severity == dg.AssetCheckSeverity.WARN and "sim_beta" in check.description
        # No account could be sized: the step fails, and the check says so with ERROR severity.
        none = dg.materialize(
            sizing_only,
            instance=instance,
            partition_key=partition_key(window),
            resources={"lsq": sized_with(settings, tmp_path, {"sim_alpha", "sim_beta"})},
            raise_on_error=False,
        )
        assert not none.success
        (check,) = none.get_asset_check_evaluations()
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR

    # Too few successful calculators: the alpha fails clearly and no positions are sized.
    broken = [c for c in calculators if c.name == "broken"]
    before = sorted(paths.positions.iterdir())
    with dg.instance_for_test() as instance:
        failed = dg.materialize(
            build_factor_assets(broken, settings.strategy.history_days, FIVE_MINUTE),
            instance=instance,
            partition_key=partition_key(window),
            resources={"lsq": lsq},
            raise_on_error=False,
        )
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert failure.step_key == "alpha" and "only 0/1 calculators succeeded" in str(failure.event_specific_data)
    materialised = [e.asset_key.to_user_string() for e in failed.get_asset_materialization_events()]
    assert materialised == ["factor_broken"]
    assert sorted(paths.positions.iterdir()) == before


def test_lineage_declares_the_window_and_its_day(calculators: list) -> None:
    """The trailing history is read from storage and reported in metadata, not declared partition by partition."""
    factors_def = build_factor_assets(calculators, 2, FIVE_MINUTE)[0]
    key = factor_key(calculators[0].name)
    deps = {d.asset_key: d.partition_mapping for d in factors_def.specs_by_key[key].deps}
    window = partition_key(window_start(now_ms()) - WINDOW_MS)
    upstream = deps[BARS_5M].get_upstream_mapped_partitions_result_for_partitions(
        FIVE_MINUTE.subset_with_partition_keys([window]), FIVE_MINUTE, FIVE_MINUTE
    )
    assert list(upstream.partitions_subset.get_partition_keys()) == [window]
    assert {BARS_5M, TRAN_STATS_5M, PREMIUM_INDEX_5M, FUNDING_RATES, UNIVERSE} == set(deps)
