"""A healthy run prints a short log: the instance `lsq` prepares keeps Dagster's per-event DEBUG lines and automation's
"exceeding the maximum of 100" warnings off the console, while the events themselves stay in the instance."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from lsq_pipeline.cli import dagster_env
from lsq_pipeline.defs.market.assets import ROLLUP_AUTOMATION


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The instance `lsq run` gives `dagster dev`: the project's dagster.yaml in a DAGSTER_HOME, and its environment."""
    for name, value in dagster_env(tmp_path / "dagster_home").items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        yield instance


def test_runs_print_info_and_store_every_event(instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]) -> None:
    @dg.asset
    def window(context: dg.AssetExecutionContext) -> int:
        context.log.info("window stored")
        return 1

    result = dg.materialize([window], instance=instance)
    assert result.success
    err = capfd.readouterr().err
    assert " - DEBUG - " not in err  # STEP_START, HANDLED_OUTPUT, ... : ~73 such lines per window run before
    assert " - INFO - " in err and "window stored" in err  # what the steps say at INFO still reaches the console
    starts = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.STEP_START).records
    assert len(starts) == 1  # the DEBUG-level events are still stored, for the UI


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_automation_after_a_backfill_warns_about_no_partition_count(instance: dg.DagsterInstance) -> None:
    """A backfill stores hundreds of 5-minute windows at once; the rollups' eager condition then sees them all as
    updated in one tick (Dagster's default reads the times of 100 at most, and warns)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=2)
    five_minutes = dg.TimeWindowPartitionsDefinition(cron_schedule="*/5 * * * *", start=start, fmt="%Y-%m-%d-%H:%M")

    @dg.asset(partitions_def=five_minutes)
    def bars_5m() -> None: ...

    @dg.asset(
        partitions_def=dg.HourlyPartitionsDefinition(start_date=start),
        deps=[dg.AssetDep(bars_5m, partition_mapping=dg.TimeWindowPartitionMapping())],
        automation_condition=ROLLUP_AUTOMATION,
    )
    def bars_1h() -> None: ...

    defs = dg.Definitions(assets=[bars_5m, bars_1h])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    backfilled = five_minutes.get_partition_keys()[:150]
    for key in backfilled:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="bars_5m", partition=key))
    captured = Captured()
    logging.getLogger("dagster").addHandler(captured)
    try:
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    finally:
        logging.getLogger("dagster").removeHandler(captured)
    assert not [m for m in captured.messages if "exceeding the maximum" in m], captured.messages
    assert second.total_requested == 150 // 12  # every hour whose twelve windows were backfilled is rolled up
