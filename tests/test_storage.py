"""The pooled sqlite storage (dagster.yaml's) records runs exactly as Dagster's default storage does, per event and in
a backfill's batches, and stays correct across the warm worker's forks and beside other processes."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml

from lsq_pipeline.storage import (
    BATCH_SIZE_ENV,
    PooledSqliteEventLogStorage,
    PooledSqliteStorage,
    backfill_instance,
    pooled_storage_config,
)

FIVE_MINUTE = dg.TimeWindowPartitionsDefinition(
    start="2026-01-01-00:00", cron_schedule="*/5 * * * *", fmt="%Y-%m-%d-%H:%M", timezone="UTC"
)
KEYS = FIVE_MINUTE.get_partition_keys()[:120]  # two batches of 50 and a partial one


@dg.asset(
    partitions_def=FIVE_MINUTE,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("counted", asset="windows", partitions_def=FIVE_MINUTE)],
)
def windows(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult(metadata={"windows": len(context.partition_keys)})
    for key in context.partition_keys[::2]:  # the bars' way: an evaluation per window of the range
        context.log_event(
            dg.AssetCheckEvaluation(asset_key=windows.key, check_name="counted", passed=True, partition=key)
        )
    yield dg.AssetCheckResult(check_name="counted", passed=True)


def tags_of(instance: dg.DagsterInstance, event_id: int) -> dict[str, str]:
    stored = instance.get_event_tags_for_asset(windows.key, filter_event_id=event_id)
    return dict(stored[0]) if len(stored) == 1 else {}


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
        # a planned row per window of the range, updated by each window's evaluation
        "checks": sorted(
            (c.partition or "", c.status.value, c.event.dagster_event_type.value if c.event else "")
            for c in instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(windows.key, "counted"), limit=1000
            )
        ),
        "metadata": {
            str(r.asset_materialization.metadata["windows"].value) for r in records if r.asset_materialization
        },
        # each materialisation's indexed tags (its data version) are stored against its own event id
        "tags_follow_events": all(
            tags_of(instance, r.storage_id)
            == {"dagster/data_version": r.asset_materialization.tags["dagster/data_version"]}
            for r in records
            if r.asset_materialization and r.asset_materialization.tags
        ),
    }


def test_a_range_run_is_recorded_as_by_the_default_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BATCH_SIZE_ENV, "50")
    for home in ("default", "batched"):
        (tmp_path / home).mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "default")) as default:
        expected = record(default)
    with backfill_instance(tmp_path / "batched") as batched:
        assert isinstance(batched.event_log_storage, PooledSqliteEventLogStorage)
        assert record(batched) == expected
    assert expected["partitions"] == expected["indexed"] == expected["in_run_log"] == sorted(KEYS)
    assert expected["latest"] == KEYS[-1]
    assert [c[0] for c in expected["checks"] if c[1] == "PLANNED"] == KEYS[1::2]  # windows never evaluated
    assert [c[0] for c in expected["checks"] if c[0] and c[1] == "SUCCEEDED"] == KEYS[::2]
    assert expected["tags_follow_events"] is True


def test_a_home_with_its_own_storage_opens_as_configured(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    runs = tmp_path / "elsewhere"
    config = {"storage": {"sqlite": {"base_dir": str(runs)}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with backfill_instance(home) as instance:
        assert not isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert runs.exists()


@dg.asset(partitions_def=FIVE_MINUTE, check_specs=[dg.AssetCheckSpec("positive", asset="checked")])
def checked(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("computing %s", context.partition_key)
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])


def run_log(instance: dg.DagsterInstance, key: str) -> list[str]:
    result = dg.materialize([checked], instance=instance, partition_key=key)
    assert result.success
    return [e.dagster_event.event_type_value if e.dagster_event else "log" for e in instance.all_logs(result.run_id)]


def pooled_instance(home: Path) -> dg.DagsterInstance:
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": pooled_storage_config(home)}))
    return dg.DagsterInstance.from_config(str(home))


def test_runs_are_recorded_as_by_the_default_storage(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "default")) as default:
        expected = [run_log(default, k) for k in KEYS[:3]]
        expected_checks = default.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(checked.key, "positive"), limit=10
        )
    with pooled_instance(tmp_path / "pooled") as pooled:
        assert isinstance(pooled.get_ref().storage, PooledSqliteStorage)
        assert [run_log(pooled, k) for k in KEYS[:3]] == expected
        assert sorted(pooled.get_materialized_partitions(checked.key)) == KEYS[:3]
        checks = pooled.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(checked.key, "positive"), limit=10
        )
        assert [(c.partition, c.status) for c in checks] == [(c.partition, c.status) for c in expected_checks]
    # the files are Dagster's own: the default storage reads what the pooled one wrote
    with dg.DagsterInstance.from_config(str(tmp_path / "pooled")) as reread:
        assert sorted(reread.get_materialized_partitions(checked.key)) == KEYS[:3]
        assert len(reread.get_runs()) == 3


def test_a_forked_child_and_a_second_process_write_beside_the_parent(tmp_path: Path) -> None:
    """The warm worker forks runs from a process whose storage is already connected, and goes on using it; other
    processes (daemon, webserver) write to the same files meanwhile. All three write at once through kept
    connections: every run's events arrive, none is lost, lands in another run or waits on a lock left held."""
    home = tmp_path / "home"
    with pooled_instance(home) as parent:
        run_log(parent, KEYS[0])
        pid = os.fork()
        if pid == 0:  # the child: it inherited the parent's open connections and must not use them
            code = 0
            try:
                for key in KEYS[10:15]:
                    run_log(parent, key)
            except BaseException:
                code = 1
            os._exit(code)
        second = [sys.executable, "-c", SECOND_PROCESS, str(home), *KEYS[20:25]]
        other = subprocess.Popen(second, stderr=subprocess.PIPE)
        for key in KEYS[1:6]:
            run_log(parent, key)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert other.wait(timeout=300) == 0, other.stderr.read() if other.stderr else ""
        assert sorted(parent.get_materialized_partitions(checked.key)) == sorted(KEYS[:6] + KEYS[10:15] + KEYS[20:25])
        for run in parent.get_runs():
            assert parent.get_run_stats(run.run_id).materializations == 1
            assert run.status == dg.DagsterRunStatus.SUCCESS


SECOND_PROCESS = """
import sys
import dagster as dg
sys.path.insert(0, "tests")
from test_storage import run_log
with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    for key in sys.argv[2:]:
        run_log(instance, key)
"""


def test_a_tagged_materialisation_opens_no_connection_once_the_tables_are_known(tmp_path: Path) -> None:
    """Every materialisation a run records carries its data version, an indexed tag; Dagster asks whether the tags
    table exists before storing it, through a new sqlite engine each time unless the storage remembers."""
    opened: list[object] = []

    def count(*_: object) -> None:
        opened.append(None)

    with pooled_instance(tmp_path / "pooled") as instance:
        tagged = dg.AssetMaterialization("series", tags={"dagster/data_version": "1"})
        instance.report_runless_asset_event(tagged)  # warm: engines kept, tables looked up once
        sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", count)
        try:
            for _ in range(10):
                instance.report_runless_asset_event(tagged)
        finally:
            sqlalchemy.event.remove(sqlalchemy.pool.Pool, "connect", count)
        assert len(instance.fetch_materializations(dg.AssetKey("series"), limit=100).records) == 11
        assert instance.get_event_tags_for_asset(dg.AssetKey("series"))
    assert opened == []
