"""A snapshot of the code location, built once from Settings: asset keys and groups, partitions, checks, jobs,
schedules and sensors. A change here is a change to what an operator sees in the Dagster UI, so it is deliberate."""

import ast
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from markdown_it import MarkdownIt

from lsq.clock import FakeClock
from lsq.config import Settings, load_config
from lsq_pipeline.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[1]
ROLLUP_PERIODS = ("1h", "4h", "8h", "12h", "24h")
FACTORS = ("funding_carry", "mean_buy_dolvol4_over_dolvol_rank", "momentum_24h", "testnet_volume_rank")
GROUPS = {
    "agg_trades": "trades",
    "bars_5m": "bars_5m",
    "tran_stats_5m": "bars_5m",
    "premium_index_5m": "bars_5m",
    **{f"{kind}_{p}": "rollups" for kind in ("bars", "tran_stats") for p in ROLLUP_PERIODS},
    "funding_rates": "reference",
    "universe": "reference",
    **{f"factor_{name}": "factors" for name in FACTORS},
    "alpha": "factors",
    "target_positions": "factors",
    "executions": "execution",
    "account_state": "monitoring",
    "strategy_report": "monitoring",
}
BAR_CHECKS = {
    "bars_universe_coverage",
    "bars_ohlc_sane",
    "bars_volumes_non_negative",
    "bars_buy_sell_sum",
    "bars_no_trade_fill",
    "trades_contiguous",
    "bars_match_exchange_klines",
}


def settings_with(**data: object) -> Settings:
    base = load_config()
    return base.model_copy(update={"data": base.data.model_copy(update=data)})


@pytest.fixture(scope="module")
def settings() -> Settings:
    base = settings_with(partitions_start="2026-10-15", universe_refresh_time="22:40", timezone="Europe/London")
    calculators = base.strategy.calculators.model_copy(update={"enabled": list(FACTORS)})
    strategy = base.strategy.model_copy(update={"history_days": 3, "calculators": calculators})
    return base.model_copy(update={"strategy": strategy})


@pytest.fixture(scope="module")
def defs(settings: Settings) -> dg.Definitions:
    return build_definitions(settings, clock=FakeClock())


@pytest.fixture(scope="module")
def graph(defs: dg.Definitions):
    return defs.resolve_asset_graph()


def test_asset_keys_and_groups(graph) -> None:
    assert {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()} == GROUPS


def test_partitions_come_from_the_settings(graph) -> None:
    start = datetime(2026, 10, 15, tzinfo=UTC)

    def partitions(name: str):
        return graph.get(dg.AssetKey(name)).partitions_def

    five = partitions("bars_5m")
    assert (five.cron_schedule, five.fmt, five.timezone, five.start) == ("*/5 * * * *", "%Y-%m-%d-%H:%M", "UTC", start)
    on_windows = [name for name, group in GROUPS.items() if group in ("trades", "bars_5m", "factors")]
    assert all(partitions(name) == five for name in on_windows)
    crons = {p: partitions(f"bars_{p}").cron_schedule for p in ROLLUP_PERIODS}
    assert crons == {
        "1h": "0 * * * *",
        "4h": "0 */4 * * *",
        "8h": "0 */8 * * *",
        "12h": "0 */12 * * *",
        "24h": "0 0 * * *",
    }
    assert all(partitions(f"tran_stats_{p}") == partitions(f"bars_{p}") for p in ROLLUP_PERIODS)
    assert all(partitions(f"bars_{p}").start == start for p in ROLLUP_PERIODS)
    universe, funding = partitions("universe"), partitions("funding_rates")
    assert isinstance(universe, dg.DailyPartitionsDefinition) and universe.start == start and universe.end_offset == 2
    assert isinstance(funding, dg.DailyPartitionsDefinition) and funding.start == start and funding.end_offset == 1


def test_factor_lineage_is_the_window_itself(graph) -> None:
    """The trailing history is read from storage and reported in metadata; a 30-day 5-minute mapping would cost the
    factors step seconds of cron stepping (lsq_pipeline.defs.factors.assets.factor_deps)."""
    factor = graph.get(dg.AssetKey(f"factor_{FACTORS[0]}"))
    parents = {k.to_user_string() for k in factor.parent_keys}
    assert parents == {"bars_5m", "tran_stats_5m", "premium_index_5m", "funding_rates", "universe"}
    mapping = graph.get_partition_mapping(factor.key, dg.AssetKey("bars_5m"))
    assert (mapping.start_offset, mapping.end_offset) == (0, 0)


def test_descriptions_render_as_written(graph) -> None:
    """The UI renders descriptions as Markdown: a path like {account}_target_positions_{stamp} must not turn into
    italics (its underscores eaten)."""
    render = MarkdownIt("commonmark").render
    italic = {
        key.to_user_string(): graph.get(key).description
        for key in graph.get_all_asset_keys()
        if "<em>" in render(graph.get(key).description or "")
    }
    assert italic == {}


def test_checks(graph) -> None:
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == (
        {("bars_5m", name) for name in BAR_CHECKS}
        | {(f"factor_{n}", "succeeded") for n in FACTORS}
        | {("account_state", name) for name in ("deviation", "exposure", "health")}
        | {("target_positions", "accounts_sized")}
    )


def test_jobs_schedules_and_sensors(defs: dg.Definitions) -> None:
    assert sorted(job.name for job in defs.jobs) == [
        "account_checks_job",
        "execution_job",
        "factor_view_job",
        "funding_job",
        "strategy_report_job",
        "universe_job",
        "window_job",
    ]
    window = defs.resolve_job_def("window_job")
    assert {k.to_user_string() for k in window.asset_layer.executable_asset_keys} == {
        name for name, group in GROUPS.items() if group in ("bars_5m", "factors")
    }
    schedules = {s.name: (s.cron_schedule, s.execution_timezone, s.job_name) for s in defs.schedules}
    assert schedules == {
        "universe_schedule": ("40 22 * * *", "Europe/London", "universe_job"),
        "funding_schedule": ("2 * * * *", "UTC", "funding_job"),
        "factor_view_schedule": ("3 0 * * *", "UTC", "factor_view_job"),
        "strategy_report_schedule": ("10 0 * * *", "UTC", "strategy_report_job"),
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules if "report" in s.name)
    sensors = {s.name: s for s in defs.sensors}
    assert sorted(sensors) == [
        "account_state_sensor",
        "alert_sensor",
        "execution_sensor",
        "rollup_automation",
        "sealed_window_sensor",
    ]
    assert sensors["sealed_window_sensor"].job_name == "window_job"
    assert sensors["execution_sensor"].job_name == "execution_job"
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())


def test_executions_are_partitioned_by_account_in_their_own_job(defs: dg.Definitions, graph) -> None:
    """One partition per account (the sensor keeps them in step with the configuration), one run per account and
    window in a job of its own (never holding up window_job), not retried automatically, and the account's tag
    limited to one run at a time by dagster.yaml."""
    import yaml

    executions = graph.get(dg.AssetKey("executions"))
    assert isinstance(executions.partitions_def, dg.DynamicPartitionsDefinition)
    assert executions.partitions_def.name == "accounts"
    assert {k.to_user_string() for k in executions.parent_keys} == {"target_positions"}
    job = defs.resolve_job_def("execution_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"executions"}
    assert job.tags["dagster/max_retries"] == "0"
    limits = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "lsq/account", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_monitoring_is_partitioned_by_the_execution_accounts(graph) -> None:
    """account_state and its checks on the `accounts` partitions (the execution domain's, by name), recorded by a
    sensor (no run materializes it); strategy_report per account and UTC day from the partitions start."""
    state = graph.get(dg.AssetKey("account_state"))
    assert isinstance(state.partitions_def, dg.DynamicPartitionsDefinition) and state.partitions_def.name == "accounts"
    assert not state.is_executable
    report = graph.get(dg.AssetKey("strategy_report")).partitions_def
    assert isinstance(report, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in report.partitions_defs}
    assert dims["account"] == state.partitions_def
    assert isinstance(dims["day"], dg.DailyPartitionsDefinition)
    assert dims["day"].start == datetime(2026, 10, 15, tzinfo=UTC)


def test_the_configuration_is_read_once_at_the_bottom_of_definitions() -> None:
    """No module of the code location reads the configuration when it is imported, but definitions.py's `defs`."""
    offenders = []
    for path in sorted((ROOT / "lsq_pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        for node in top_level:
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "load_config":
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert offenders == ["lsq_pipeline/definitions.py:" + str(_defs_line())]


def _defs_line() -> int:
    source = (ROOT / "lsq_pipeline" / "definitions.py").read_text().splitlines()
    return next(i for i, line in enumerate(source, 1) if line.startswith("defs = build_definitions(load_config())"))
