"""The execution domain in Dagster: the fan-out sensor on a real instance (run keys, tags, the `accounts` dynamic
partitions, its cursor) and the `executions` asset materialised against the simulator (orders counted at the
simulator's /admin/orders, figures in the metadata, dry run, stale targets, a failing run). The executor's clock is
a FakeClock, so TWAP slices and the staleness guard never wait for or depend on real time."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from conftest import start_sim_server
from execution_helpers import assert_converged, flatten, fresh_window, positions, write_config, write_target

from lsq.clock import FakeClock
from lsq.paths import DataPaths
from lsq.targets import positions_file
from lsq.timelabels import WINDOW_MS, label_of, partition_key
from lsq_pipeline.defs import execution
from lsq_pipeline.defs.execution.assets import ACCOUNT_TAG, ACCOUNTS, LABEL_TAG, WINDOW_TAG, executions_asset
from lsq_pipeline.resources import LsqResource
from simulator.ratelimit import RateLimits


@pytest.fixture(scope="module")
def _module_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Raised request limits: every materialisation reconciles and sets contract settings, several per minute."""
    sim = start_sim_server(tmp_path_factory.mktemp("execution-dagster-sim"), limits=RateLimits().scaled(10))
    try:
        yield sim
    finally:
        sim.stop()


def config(tmp_path: Path, sim: Any, name: str = "lsq.yaml", **execution: Any) -> Path:
    """A configuration file on the simulator with data under tmp_path; `execution` keys override (dry_run, ...)."""
    path = write_config(tmp_path, sim)
    document = yaml.safe_load(path.read_text())
    document["execution"].update(execution)
    target = tmp_path / name
    target.write_text(yaml.safe_dump(document))
    return target


def order_requests(sim: Any, account_id: str, after: int) -> list[dict[str, Any]]:
    return sim.admin(f"orders?account={account_id}&after={after}")["requests"]


def last_seq(sim: Any) -> int:
    return max((r["seq"] for r in sim.admin("orders")["requests"]), default=0)


def materialize(
    lsq: LsqResource, clock: FakeClock, account_id: str, window: int | None
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    """One `executions` materialisation on an ephemeral instance, as the sensor's run would do it."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(ACCOUNTS.name, [account_id])
    tags = {ACCOUNT_TAG: account_id} | ({WINDOW_TAG: partition_key(window)} if window is not None else {})
    result = dg.materialize(
        [executions_asset(clock)],
        partition_key=account_id,
        instance=instance,
        resources={"lsq": lsq},
        tags=tags,
        raise_on_error=False,
    )
    events = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in events[0].materialization.metadata.items()} if events else {}
    return result, meta


# ----- the sensor ----------------------------------------------------------------------------------------------------


def tick(instance: dg.DagsterInstance, lsq: LsqResource, clock: FakeClock, cursor: str | None) -> dg.SensorResult:
    """One evaluation of the execution domain's sensor (its definitions built with `clock`, resource `lsq`)."""
    defs = dg.Definitions.merge(execution.defs(lsq.settings, clock), dg.Definitions(resources={"lsq": lsq}))
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources
    )  # with the ref, the run requests' partitions are checked against the instance, as the daemon does
    return defs.get_sensor_def("execution_sensor").evaluate_tick(context)


def apply_partitions(instance: dg.DagsterInstance, result: Any) -> None:
    """What the sensor daemon does with a tick's partition requests."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def target_positions_stored(instance: dg.DagsterInstance, window: int) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization("target_positions", partition=partition_key(window)))


def test_sensor_fans_each_target_window_out_to_every_enabled_account(sim_server: Any, tmp_path: Path) -> None:
    lsq = LsqResource(config_path=str(config(tmp_path, sim_server)))
    accounts = sorted(a.account_id for a in sim_server.accounts)
    window = fresh_window()
    clock = FakeClock(now_ms=window + WINDOW_MS + 20_000)
    with dg.instance_for_test() as instance:
        # Before any target: the accounts partitions are created, nothing is run.
        first = tick(instance, lsq, clock, None)
        assert first.run_requests == []
        assert [(r.partitions_def_name, sorted(r.partition_keys)) for r in first.dynamic_partitions_requests] == [
            ("accounts", accounts)
        ]
        apply_partitions(instance, first)

        target_positions_stored(instance, window)
        second = tick(instance, lsq, clock, first.cursor)
        key = partition_key(window)
        assert sorted(r.run_key for r in second.run_requests) == [f"{a}:{key}" for a in accounts]
        assert all(r.partition_key == r.tags[ACCOUNT_TAG] for r in second.run_requests)
        assert {r.tags[WINDOW_TAG] for r in second.run_requests} == {key}
        assert "lsq/window" not in second.run_requests[0].tags  # that key serialises the window runs
        assert second.dynamic_partitions_requests == []

        # The same tick again (its cursor): no duplicate request.
        again = tick(instance, lsq, clock, second.cursor)
        assert again.run_requests == [] and again.skip_message

        # Two more windows before the next tick: both, in order, for each account.
        for w in (window + WINDOW_MS, window + 2 * WINDOW_MS):
            target_positions_stored(instance, w)
        later = tick(instance, lsq, clock, again.cursor)
        keys = [r.run_key for r in later.run_requests]
        assert keys == [
            f"{a}:{partition_key(w)}" for w in (window + WINDOW_MS, window + 2 * WINDOW_MS) for a in accounts
        ]

        # An account that leaves the configuration leaves the partitions; a new sensor (no cursor) executes only a
        # fresh newest window, never history.
        only = LsqResource(config_path=str(config(tmp_path, sim_server, "one.yaml", mock={"accounts": [
            {"account_id": a.account_id, "api_key": a.api_key.get_secret_value(),
             "api_secret": a.api_secret.get_secret_value()} for a in sim_server.accounts[:1]]})))  # fmt: skip
        fresh = tick(instance, lsq=only, clock=FakeClock(window + 3 * WINDOW_MS + 5_000), cursor=None)
        assert [r.run_key for r in fresh.run_requests] == [f"{accounts[0]}:{partition_key(window + 2 * WINDOW_MS)}"]
        assert [(type(r).__name__, list(r.partition_keys)) for r in fresh.dynamic_partitions_requests] == [
            ("DeleteDynamicPartitionsRequest", accounts[1:])
        ]
        stale = tick(instance, lsq, FakeClock(window + 3 * WINDOW_MS + 601_000), None)  # max_target_age_seconds 600
        assert stale.run_requests == [] and stale.cursor == later.cursor


# ----- the executions asset against the simulator -------------------------------------------------------------------


def test_executions_trades_the_window_and_records_its_figures(sim_server: Any, tmp_path: Path) -> None:
    lsq = LsqResource(config_path=str(config(tmp_path, sim_server)))
    settings = lsq.settings
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    window = fresh_window()
    target = write_target(settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -2500}, window)
    clock = FakeClock(now_ms=window + WINDOW_MS + 3_000)
    seq = last_seq(sim_server)
    result, meta = materialize(lsq, clock, acct, window)
    assert result.success
    assert_converged(settings, acct, target)
    sent = [r for r in order_requests(sim_server, acct, seq) if r["endpoint"] != "DELETE /fapi/v1/order"]
    assert meta["status"] == "completed" and meta["algorithm"] == "twap"  # the configured default
    assert meta["orders_sent"] == len(sent) > 0
    assert meta["filled_notional"] > 5000 and meta["fees"] > 0
    assert isinstance(meta["slippage_bps"], float) and meta["residual_notional"] < 100
    assert meta["window"] == label_of(window) and meta["target_file"] == str(target)
    assert meta["first_ack_after_window_end_s"] >= 3.0  # from the FakeClock: the run started 3 s after the end
    mat = result.get_asset_materialization_events()[0].materialization
    assert mat.tags[LABEL_TAG] == label_of(window) and mat.tags[ACCOUNT_TAG] == acct
    assert meta["target_window"] == partition_key(window)

    # Re-executing the same window by hand is safe: nothing new is placed.
    seq = last_seq(sim_server)
    again, meta = materialize(lsq, clock, acct, window)
    assert again.success and meta["orders_sent"] == 0
    assert [r for r in order_requests(sim_server, acct, seq) if r["result"] == "placed"] == []


def test_dry_run_and_stale_targets_send_nothing_and_say_so(sim_server: Any, tmp_path: Path) -> None:
    acct = sim_server.accounts[1].account_id
    dry = LsqResource(config_path=str(config(tmp_path, sim_server, "dry.yaml", dry_run=True)))
    flatten(dry.settings, acct)
    window = fresh_window()
    write_target(dry.settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -2500}, window)
    seq = last_seq(sim_server)
    result, meta = materialize(dry, FakeClock(window + WINDOW_MS + 1_000), acct, window)
    assert result.success and meta["status"] == "dry_run" and meta["dry_run"] is True
    assert meta["orders_sent"] == 0 and len(meta["dry_run_orders"]) == 2
    assert order_requests(sim_server, acct, seq) == []  # zero order requests reached the simulator

    live = LsqResource(config_path=str(config(tmp_path, sim_server)))
    result, meta = materialize(live, FakeClock(window + WINDOW_MS + 601_000), acct, window)
    assert result.success and meta["status"] == "stale" and "old" in meta["notes"]
    assert order_requests(sim_server, acct, seq) == [] and positions(live.settings, acct) == {}

    # A window without a file for this account (sizing skipped it): nothing to execute, said plainly.
    result, meta = materialize(live, FakeClock(window + 2 * WINDOW_MS + 1_000), acct, window + WINDOW_MS)
    assert result.success and meta["status"] == "no_targets"


def test_a_failing_run_fails_the_step_with_one_clear_message(sim_server: Any, tmp_path: Path) -> None:
    lsq = LsqResource(config_path=str(config(tmp_path, sim_server)))
    acct = sim_server.accounts[0].account_id
    window = fresh_window()
    broken = positions_file(DataPaths(tmp_path), acct, window)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{not json")
    result, meta = materialize(lsq, FakeClock(window + WINDOW_MS + 1_000), acct, window)
    assert not result.success and meta == {}
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.step_failure_data
    assert data.user_failure_data.description == f"{acct}: target file {broken} is not valid JSON: " + (
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    assert data.user_failure_data.metadata["status"].value == "failed"


# ----- end to end: target_positions -> sensor -> execution runs ---------------------------------------------------


def test_a_window_target_fans_out_to_execution_runs_that_trade(sim_server: Any, tmp_path: Path) -> None:
    """The factor stage sizes a window for every account; the sensor turns that materialisation into one run of
    execution_job per account, and each run trades its account toward its own file on the simulator."""
    from builders import market, universe_def, without_bar_checks
    from test_factor_assets import FIVE_MINUTE, write_trades

    from factors.discovery import discover
    from lsq.exchange import rest_client
    from lsq.timelabels import format_day, now_ms, window_start
    from lsq_pipeline.defs.factors.assets import build_factor_assets

    lsq = LsqResource(config_path=str(config(tmp_path, sim_server)))
    settings = lsq.settings
    accounts = sorted(a.account_id for a in sim_server.accounts)
    for acct in accounts:
        flatten(settings, acct)
    window = window_start(now_ms()) - 2 * WINDOW_MS
    prices = {t["symbol"]: float(t["lastPrice"]) for t in rest_client(settings).futures_ticker()}
    write_trades(DataPaths(tmp_path), prices, window)
    calculators, _ = discover()
    stage = build_factor_assets(calculators, settings.strategy.history_days, FIVE_MINUTE)
    clock = FakeClock(now_ms=window + WINDOW_MS + 4_000)
    defs = dg.Definitions.merge(execution.defs(settings, clock), dg.Definitions(resources={"lsq": lsq}))
    with dg.instance_for_test() as instance:
        day = dg.materialize(
            [universe_def()], instance=instance, partition_key=format_day(window), resources={"lsq": lsq}
        )
        sized = dg.materialize(
            [market().window_stats_5m, *stage],
            instance=instance,
            partition_key=partition_key(window),
            resources={"lsq": lsq},
            selection=without_bar_checks(),  # synthetic trades: not the exchange's klines
        )
        assert day.success and sized.success
        result = tick(instance, lsq, clock, "0")
        assert sorted(r.run_key for r in result.run_requests) == [f"{a}:{partition_key(window)}" for a in accounts]
        apply_partitions(instance, result)
        job = defs.resolve_job_def("execution_job")
        seq = last_seq(sim_server)
        for request in result.run_requests:
            run = job.execute_in_process(partition_key=request.partition_key, tags=request.tags, instance=instance)
            assert run.success
            assert run.dagster_run.tags["dagster/max_retries"] == "0"
        records = instance.fetch_materializations(dg.AssetKey("executions"), limit=10).records
        statuses = {r.partition_key: r.asset_materialization.metadata["status"].value for r in records}
        assert statuses == dict.fromkeys(accounts, "completed")
    for acct in accounts:
        assert_converged(settings, acct, positions_file(DataPaths(tmp_path), acct, window))
        assert any(r["result"] == "placed" for r in order_requests(sim_server, acct, seq))
