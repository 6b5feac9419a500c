"""The deployment docs/scale-out.md describes, with processes instead of pods: the code location served by its own
gRPC server (`dagster code-server start`), `dagster-webserver` and `dagster-daemon` loading it from a workspace that
points at that server, the instance on PostgreSQL, and every run launched by the daemon in a process of its own.
A window run (submitted as `lsq trigger` does, through the webserver's GraphQL API) and a partition backfill (run by
the daemon's backfill loop) store their panels in the shared data directory and their materialisations and checks
in PostgreSQL."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from builders import universe_frame
from dagster_graphql import DagsterGraphQLClient
from postgres_server import free_port, postgres_server
from test_pipeline_assets import UNIVERSE, synthetic_trades

from lsq.paths import DataPaths
from lsq.stores.panels import load_panel
from lsq.stores.universes import write_universe
from lsq.timelabels import WINDOW_MS, parse_partition_key, partition_key
from lsq.tradestore import TradeStore
from lsq_pipeline.cli import AUTOMATION_PARTITIONS
from lsq_pipeline.submit import LOCATION

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T0 = parse_partition_key("2026-11-20-10:00")
WINDOW_ASSETS = ["bars_5m", "tran_stats_5m"]
DEADLINE_S = 240  # a loaded 2-core machine: code server, webserver, daemon and run processes all import Dagster

# starts PostgreSQL and three Dagster services, each importing the code location: minutes on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@contextmanager
def _started(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _wait(what: str, done: Callable[[], bool], procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"exited while waiting for {what}: {dead}; logs in {logs}"
        assert time.monotonic() < deadline, f"{what} within {DEADLINE_S} s; logs in {logs}"
        time.sleep(1)


def test_window_and_backfill_runs_through_code_server_webserver_and_daemon_on_postgres(tmp_path: Path) -> None:
    data = DataPaths(tmp_path / "data")
    store = TradeStore(data)
    for i, symbol in enumerate(UNIVERSE[:2]):
        store.write_part(symbol, synthetic_trades(symbol, T0, 4, seed=i))
    for version in ("v1", "v2"):
        write_universe(data, "2026-11-20", version, universe_frame(UNIVERSE))
    closed = free_port()  # nothing listens: the exchange-parity check says "could not verify", as in an outage
    mock = {f"{k}_url": f"{s}://127.0.0.1:{closed}" for k, s in (("rest", "http"), ("ws", "ws"), ("data", "http"))}
    config = tmp_path / "lsq.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"data_dir": str(data.root), "partitions_start": "2026-11-01"}, "binance": {"mock": mock}}
        )
    )
    with ExitStack() as stack:
        pg = stack.enter_context(postgres_server())
        home = tmp_path / "dagster_home"
        home.mkdir()
        instance_config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        instance_config["storage"] = pg.storage_config(pg.create_database("dagster"))
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        grpc_port, web_port = free_port(), free_port()
        workspace = tmp_path / "workspace.yaml"
        server = {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
        env = {**os.environ, "DAGSTER_HOME": str(home), "LSQ_CONFIG": str(config), **AUTOMATION_PARTITIONS}
        logs = tmp_path / "logs"
        logs.mkdir()
        code_server = [str(BIN / "dagster"), "code-server", "start", "-m", "lsq_pipeline.definitions"]
        code_server += ["--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(grpc_port)]
        procs = [
            stack.enter_context(_started(code_server, env, logs / "code-server.log", home)),
            stack.enter_context(
                _started(
                    [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)],
                    env,
                    logs / "webserver.log",
                    home,
                )
            ),
            stack.enter_context(
                _started([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs / "daemon.log", home)
            ),
        ]
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=180)  # a loaded webserver
        window = partition_key(T0)
        run_ids: list[str] = []

        def submitted() -> bool:
            try:
                run_ids.append(
                    client.submit_job_execution(
                        "window_job",
                        repository_location_name=LOCATION,
                        tags={"dagster/partition": window, "lsq/window": "serial"},
                        asset_selection=WINDOW_ASSETS,
                    )
                )
            except Exception:  # the webserver is not up, or has not loaded the code location yet
                return False
            return True

        _wait("the webserver to take the window run", submitted, procs, logs)
        backfilled = [partition_key(T0 + i * WINDOW_MS) for i in (1, 2, 3)]
        launched = client._execute(  # the client has no backfill method; its own GraphQL call
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {"params": {"partitionNames": backfilled, "assetSelection": [{"path": [k]} for k in WINDOW_ASSETS]}},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def finished() -> bool:
                backfill = instance.get_backfill(launched["backfillId"])
                run = instance.get_run_by_id(run_ids[0])
                return (
                    run is not None
                    and run.is_finished
                    and backfill is not None
                    and backfill.status.value != "REQUESTED"
                )

            _wait("the window run and the backfill to finish", finished, procs, logs)
            run = instance.get_run_by_id(run_ids[0])
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, logs
            backfill = instance.get_backfill(launched["backfillId"])
            assert backfill is not None and backfill.status.value == "COMPLETED_SUCCESS", backfill
            for asset in WINDOW_ASSETS:
                assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {window, *backfilled}
            check = dg.AssetCheckKey(dg.AssetKey("bars_5m"), "bars_ohlc_sane")
            results = instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
            statuses = {r.partition: r.status.value for r in results if r.partition is not None}
            assert statuses == {key: "SUCCEEDED" for key in (window, *backfilled)}
    bars = load_panel("bars", T0, T0 + 4 * WINDOW_MS, paths=data)
    assert sorted(bars["open_time"].unique().to_list()) == [T0 + i * WINDOW_MS for i in range(4)]
