"""The warm run launcher (lsq_pipeline.launcher) on a real sqlite Dagster instance, with a real code server (the
workspace's gRPC process) for the fallback and a real warm worker (lsq_pipeline.warm_worker) for the forked runs.

Runs are created from the workspace's job, launched through `instance.launch_run` (what the queue's daemon calls)
and awaited until they end; nothing asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import waiting
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.launcher.base import WorkerStatus
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import ModuleTarget

from lsq.clock import FakeClock
from lsq.timelabels import DAY_MS, day_start
from lsq_pipeline.launcher import WarmRunLauncher, start_worker
from lsq_pipeline.warm_worker import PID_TAG, Worker, request, socket_path

TESTS = Path(__file__).resolve().parent
MODULE = "warm_location"
DEADLINE_S = 120.0


@contextlib.contextmanager
def instance_at(home: Path, storage: dict[str, object] | None = None) -> Iterator[dg.DagsterInstance]:
    """An instance in `home` with the warm launcher (which starts no worker of its own: the tests start theirs)."""
    launcher = {"module": "lsq_pipeline.launcher", "class": "WarmRunLauncher", "config": {"start_worker": False}}
    config: dict[str, object] = {"telemetry": {"enabled": False}, "run_launcher": launcher}
    if storage is not None:
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WARM_RELEASE_FILE", str(home / "release"))
        env.setenv("DAGSTER_HOME", str(home))  # the worker preloads the instance's storage classes from it
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


@contextlib.contextmanager
def workspace_of(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    """The test code location served by a real code server (a gRPC process), as `dagster dev` serves ours."""
    target = ModuleTarget(module_name=MODULE, attribute=None, working_directory=str(TESTS), location_name="warm")
    with WorkspaceProcessContext(instance, target) as context:
        yield context.create_request_context()


@contextlib.contextmanager
def worker_for(instance: dg.DagsterInstance) -> Iterator[Path]:
    """A warm worker for the instance's home, stopped at the end (it would exit with this process anyway)."""
    path = socket_path(instance.root_directory)
    start_worker(path, MODULE, str(TESTS))
    waiting.wait_for("a warm worker to come up (see its .log)", path.exists, DEADLINE_S)
    try:
        yield path
    finally:
        stop_worker(path)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """One instance and code server for the module (a code server takes seconds to start); each test its runs."""
    with instance_at(tmp_path_factory.mktemp("dagster_home")) as instance:
        yield instance


@pytest.fixture(scope="module")
def workspace(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    with workspace_of(instance) as workspace:
        yield workspace


@pytest.fixture
def worker(instance: dg.DagsterInstance) -> Iterator[Path]:
    with worker_for(instance) as path:
        yield path


def stop_worker(path: Path) -> None:
    """Ask the worker to stop and wait until its socket is gone (the next test may want no worker)."""
    with contextlib.suppress(OSError):
        request(path, {"stop": True})
    waiting.wait_for("the warm worker to stop", lambda: not path.exists(), DEADLINE_S)


def launch(instance: dg.DagsterInstance, workspace: WorkspaceRequestContext, job: str) -> str:
    location = workspace.get_code_location("warm")
    remote = location.get_repository("__repository__").get_full_job(job)
    run = instance.create_run_for_job(
        job_def=_defs().resolve_job_def(job),
        remote_job_origin=remote.get_remote_origin(),
        job_code_origin=remote.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def _defs() -> dg.Definitions:
    import warm_location

    return warm_location.defs


def wait_for(instance: dg.DagsterInstance, run_id: str, done: set[dg.DagsterRunStatus]) -> dg.DagsterRun:
    def reached() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        return run if run is not None and run.status in done else None

    return waiting.wait_for(f"run {run_id} to reach {sorted(s.value for s in done)}", reached, DEADLINE_S)


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    return wait_for(instance, run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)]


def test_a_forked_run_is_a_real_run(
    instance: dg.DagsterInstance, workspace: WorkspaceRequestContext, worker: Path
) -> None:
    assert_forked_run(instance, workspace)


@pytest.mark.slow  # starts a PostgreSQL server (tests/postgres_server.py)
def test_a_forked_run_on_postgres(tmp_path: Path) -> None:
    from postgres_server import postgres_server

    with (
        postgres_server() as server,
        instance_at(tmp_path, server.storage_config(server.create_database("warm"))) as instance,
        workspace_of(instance) as workspace,
        worker_for(instance),
    ):
        assert_forked_run(instance, workspace)


def assert_forked_run(instance: dg.DagsterInstance, workspace: WorkspaceRequestContext) -> None:
    run_id = launch(instance, workspace, "warm_job")
    run = finished(instance, run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    pid = int(run.tags[PID_TAG])
    events = {e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event}
    assert {DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS} <= events
    materialization = instance.get_latest_materialization_event(dg.AssetKey("warm_asset"))
    assert materialization is not None and materialization.run_id == run_id
    assert materialization.asset_materialization is not None
    assert materialization.asset_materialization.metadata["pid"] == dg.MetadataValue.int(pid)
    assert any(f"Started process for run (pid: {pid})" in m for m in engine_messages(instance, run_id))
    assert not any("Launching through the code server" in m for m in engine_messages(instance, run_id))


def test_without_a_worker_the_run_goes_through_the_code_server(
    instance: dg.DagsterInstance, workspace: WorkspaceRequestContext
) -> None:
    run_id = launch(instance, workspace, "warm_job")
    run = finished(instance, run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert PID_TAG not in run.tags
    assert any("no warm run worker is running" in m for m in engine_messages(instance, run_id))
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_stale_worker_refuses_and_restarts_with_the_new_code(
    instance: dg.DagsterInstance, workspace: WorkspaceRequestContext, worker: Path
) -> None:
    """A code change since the worker imported the location: that run goes through the code server (which has the
    new code), and the worker starts itself again, so the next run is forked from the new code."""
    log = Path(f"{worker}.log")
    served = log.read_text().count("serving")
    (TESTS / "warm_location.py").touch()
    run_id = launch(instance, workspace, "warm_job")
    run = finished(instance, run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert PID_TAG not in run.tags
    assert any("warm_location.py changed" in m for m in engine_messages(instance, run_id))
    waiting.wait_for(
        "the stale worker to start again",
        lambda: log.read_text().count("serving") > served and worker.exists(),
        DEADLINE_S,
    )
    again = finished(instance, launch(instance, workspace, "warm_job"))
    assert again.status == dg.DagsterRunStatus.SUCCESS and PID_TAG in again.tags


def test_a_killed_run_process_is_reported_failed(
    instance: dg.DagsterInstance, workspace: WorkspaceRequestContext, worker: Path
) -> None:
    run_id = launch(instance, workspace, "hold_job")
    run = wait_for(instance, run_id, {dg.DagsterRunStatus.STARTED})
    run = wait_for_tag(instance, run_id)
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    pid = int(run.tags[PID_TAG])
    os.kill(pid, signal.SIGKILL)
    waiting.wait_for(
        f"pid {pid} to be reported failed",
        lambda: launcher.check_run_worker_health(run).status == WorkerStatus.FAILED,
        DEADLINE_S,
    )


def test_terminate_cancels_a_forked_run(
    instance: dg.DagsterInstance, workspace: WorkspaceRequestContext, worker: Path
) -> None:
    run_id = launch(instance, workspace, "hold_job")
    wait_for(instance, run_id, {dg.DagsterRunStatus.STARTED})
    wait_for_tag(instance, run_id)
    assert instance.run_launcher.terminate(run_id)
    run = wait_for(instance, run_id, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE})
    assert run.status == dg.DagsterRunStatus.CANCELED


def wait_for_tag(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    def tagged() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        return run if run is not None and PID_TAG in run.tags else None

    return waiting.wait_for("the launcher to tag the run with its process", tagged, DEADLINE_S)


def test_a_worker_is_stale_once_the_utc_day_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code location fixes its first partition day at import: a worker built before UTC midnight must not serve
    runs after it. One second before midnight it is fresh, at midnight it is stale (a fake clock, no waiting)."""
    monkeypatch.chdir(TESTS)  # the worker changes into its working directory; the test's own is restored after
    midnight = day_start(FakeClock().now_ms()) + DAY_MS
    clock = FakeClock(now_ms=midnight - 1000)
    built = Worker(MODULE, TESTS, clock)
    assert built.stale() is None
    clock.advance(1.0)
    assert built.stale() == "the UTC day changed since the worker imported the code location"
