"""The execution fast lane: `lsq trigger` submits an account's run the moment its target file lands, and it and
execution_sensor launch each (account, window) once, whatever the order in which they see it."""

from decimal import Decimal
from pathlib import Path

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from lsq.clock import FakeClock
from lsq.paths import DataPaths
from lsq.targets import TargetPosition, write_targets
from lsq.timelabels import WINDOW_MS, parse_partition_key, partition_key
from lsq_pipeline.defs import execution
from lsq_pipeline.defs.execution.lane import ExecutionLane, execution_tags
from lsq_pipeline.defs.market.claims import TRIGGER_GRACE_MS, claim_file, read_claim_file
from lsq_pipeline.resources import LsqResource

W = parse_partition_key("2026-11-21-08:00")
ACCOUNTS = ["sim_alpha", "sim_beta"]  # config/default.yaml's mock accounts
MAX_AGE_MS = 600_000


def land(paths: DataPaths, account_id: str, window: int) -> Path:
    """The target file target_positions writes for the account and window."""
    row = TargetPosition("BTCUSDT", Decimal("0.01"), Decimal("900"), Decimal("90000"))
    return write_targets(paths, account_id, window, Decimal("100000"), [row])


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.launched: list[tuple[str, str]] = []
        self.fail = fail

    def __call__(self, account_id: str, key: str) -> str:
        if self.fail:
            raise ConnectionError("webserver refused")
        self.launched.append((account_id, key))
        return f"run-{len(self.launched)}"


def test_the_lane_launches_each_account_once_when_its_target_file_lands(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    submit = Recorder()
    lane = ExecutionLane(paths, ACCOUNTS, submit, MAX_AGE_MS)
    now = W + WINDOW_MS + 4_000
    assert lane.step(now) == []  # no target yet
    land(paths, "sim_alpha", W)
    assert lane.step(now + 50) == [("sim_alpha", partition_key(W))]
    land(paths, "sim_beta", W)
    assert lane.step(now + 100) == [("sim_beta", partition_key(W))]
    both = ExecutionLane(paths, ACCOUNTS, submit, MAX_AGE_MS)  # ready together: claimed, then submitted together
    for account in ACCOUNTS:
        land(paths, account, W - WINDOW_MS)
    assert sorted(both.step(now + 120)) == [(a, partition_key(W - WINDOW_MS)) for a in ACCOUNTS]
    assert lane.step(now + 150) == [] and ExecutionLane(paths, ACCOUNTS, submit, MAX_AGE_MS).step(now + 200) == []
    claim = read_claim_file(paths.execution_claim("sim_alpha", W))
    assert claim is not None and claim.by == "trigger"

    # A target landing late (in the next window) is still launched while fresh; the sensor's claims are its own.
    land(paths, "sim_alpha", W + WINDOW_MS)
    claim_file(paths.execution_claim("sim_beta", W + WINDOW_MS), "sensor", now)
    land(paths, "sim_beta", W + WINDOW_MS)
    assert lane.step(W + 3 * WINDOW_MS + 10_000) == [("sim_alpha", partition_key(W + WINDOW_MS))]
    # Stale targets (older than max_target_age_seconds) are left to the sensor, which reports them.
    land(paths, "sim_alpha", W + 2 * WINDOW_MS)
    assert ExecutionLane(paths, ACCOUNTS, submit, 60_000).step(W + 4 * WINDOW_MS + 1) == []
    assert sorted(submit.launched) == sorted(
        [(a, partition_key(W - WINDOW_MS)) for a in ACCOUNTS]
        + [("sim_alpha", partition_key(W)), ("sim_beta", partition_key(W)), ("sim_alpha", partition_key(W + WINDOW_MS))]
    )


def test_a_failed_launch_keeps_its_claim_and_holds_up_no_other_account(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    land(paths, "sim_alpha", W)
    assert ExecutionLane(paths, ACCOUNTS, Recorder(fail=True), MAX_AGE_MS).step(W + WINDOW_MS + 5_000) == []
    assert read_claim_file(paths.execution_claim("sim_alpha", W)) is not None  # the sensor takes it over later
    land(paths, "sim_beta", W)
    submit = Recorder()
    assert ExecutionLane(paths, ACCOUNTS, submit, MAX_AGE_MS).step(W + WINDOW_MS + 6_000) == [
        ("sim_beta", partition_key(W))
    ]


# ----- the sensor beside the lane -------------------------------------------------------------------------------------


def tick(instance: dg.DagsterInstance, lsq: LsqResource, now: int, cursor: str | None) -> dg.SensorResult:
    defs = dg.Definitions.merge(execution.defs(lsq.settings, FakeClock(now)), dg.Definitions(resources={"lsq": lsq}))
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources
    )
    return defs.get_sensor_def("execution_sensor").evaluate_tick(context)


def lane_run(instance: dg.DagsterInstance, account_id: str, window: int) -> None:
    """What the lane's submission leaves in the instance: a run with the sensor's tags."""
    create_run_for_test(instance, job_name="execution_job", tags=execution_tags(account_id, partition_key(window)))


def test_the_sensor_skips_what_the_lane_launched_waits_for_a_young_claim_and_takes_over_a_stale_one(
    tmp_path: Path,
) -> None:
    paths = DataPaths(tmp_path)
    lsq = LsqResource(data_dir=str(paths.root))
    assert sorted(a.account_id for a in lsq.settings.usable_accounts()[0]) == ACCOUNTS
    now = W + WINDOW_MS + 10_000
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("accounts", ACCOUNTS)
        start = tick(instance, lsq, now, None)
        assert start.run_requests == [] and start.dynamic_partitions_requests == []
        for window in (W, W + WINDOW_MS):
            instance.report_runless_asset_event(
                dg.AssetMaterialization("target_positions", partition=partition_key(window))
            )

        # W: the lane launched sim_alpha (its run exists) and has claimed sim_beta, whose run is not there yet.
        claim_file(paths.execution_claim("sim_alpha", W), "trigger", now)
        lane_run(instance, "sim_alpha", W)
        claim_file(paths.execution_claim("sim_beta", W), "trigger", now)
        waiting = tick(instance, lsq, now + 1_000, start.cursor)
        assert waiting.run_requests == [] and waiting.cursor == start.cursor  # not past the window it may launch

        lane_run(instance, "sim_beta", W)
        both = tick(instance, lsq, now + 2_000, waiting.cursor)
        key = partition_key(W + WINDOW_MS)
        assert [r.run_key for r in both.run_requests] == [f"{a}:{key}" for a in ACCOUNTS]  # W+1 was nobody's
        assert all(read_claim_file(paths.execution_claim(a, W + WINDOW_MS)).by == "sensor" for a in ACCOUNTS)
        assert tick(instance, lsq, now + 3_000, both.cursor).run_requests == []

        # W+2: the lane claimed sim_alpha and died before submitting: taken over after the grace period.
        w2 = W + 2 * WINDOW_MS
        instance.report_runless_asset_event(dg.AssetMaterialization("target_positions", partition=partition_key(w2)))
        claim_file(paths.execution_claim("sim_alpha", w2), "trigger", now)
        young = tick(instance, lsq, now + 4_000, both.cursor)
        assert [r.run_key for r in young.run_requests] == [f"sim_beta:{partition_key(w2)}"]
        assert young.cursor == both.cursor
        late = tick(instance, lsq, now + TRIGGER_GRACE_MS + 1, young.cursor)
        assert sorted(r.run_key for r in late.run_requests) == [f"{a}:{partition_key(w2)}" for a in ACCOUNTS]
        assert late.cursor != young.cursor
