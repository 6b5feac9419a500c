"""The backfill's batched sqlite event log records a range run exactly as Dagster's default storage does."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from lsq_pipeline.event_log import BATCH_SIZE_ENV, BatchingSqliteEventLogStorage, backfill_instance

FIVE_MINUTE = dg.TimeWindowPartitionsDefinition(
    start="2026-01-01-00:00", cron_schedule="*/5 * * * *", fmt="%Y-%m-%d-%H:%M", timezone="UTC"
)
KEYS = FIVE_MINUTE.get_partition_keys()[:120]  # two batches of 50 and a partial one


@dg.asset(partitions_def=FIVE_MINUTE, backfill_policy=dg.BackfillPolicy.single_run())
def windows(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"windows": len(context.partition_keys)})


def record(instance: dg.DagsterInstance) -> dict[str, object]:
    result = dg.materialize(
        [windows],
        instance=instance,
        tags={"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]},
    )
    assert result.success
    records = instance.fetch_materializations(windows.key, limit=1000).records
    latest = instance.get_latest_materialization_event(windows.key)
    run_events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {
        "partitions": sorted(instance.get_materialized_partitions(windows.key)),
        "indexed": sorted(r.partition_key or "" for r in records),
        "in_run_log": sorted(e.get_dagster_event().partition or "" for e in run_events),
        "latest": latest.get_dagster_event().partition if latest else None,
        "metadata": {
            str(r.asset_materialization.metadata["windows"].value) for r in records if r.asset_materialization
        },
    }


def test_a_range_run_is_recorded_as_by_the_default_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BATCH_SIZE_ENV, "50")
    for home in ("default", "batched"):
        (tmp_path / home).mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "default")) as default:
        expected = record(default)
    with backfill_instance(tmp_path / "batched") as batched:
        assert isinstance(batched.event_log_storage, BatchingSqliteEventLogStorage)
        assert record(batched) == expected
    assert expected["partitions"] == expected["indexed"] == expected["in_run_log"] == sorted(KEYS)
    assert expected["latest"] == KEYS[-1]


def test_a_home_with_its_own_storage_opens_as_configured(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    runs = tmp_path / "elsewhere"
    config = {"storage": {"sqlite": {"base_dir": str(runs)}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with backfill_instance(home) as instance:
        assert not isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        assert runs.exists()
