"""`lsq run` (what `make run` starts): every part comes up, and Ctrl-C stops all of them, leaving no process behind."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from lsq.paths import DataPaths
from lsq.runstate import read_state
from tests.waiting import wait_for

LSQ = str(Path(sys.executable).with_name("lsq"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _collector_running(status_file: Path) -> bool:
    return status_file.exists() and bool(json.loads(status_file.read_text()).get("running"))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_lsq_run_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    sim_port, dagster_port = _free_port(), _free_port()
    data = tmp_path / "data"
    base = f"127.0.0.1:{sim_port}"
    mock = {"rest_url": f"http://{base}", "ws_url": f"ws://{base}", "data_url": f"http://{base}/data"}
    config = tmp_path / "lsq.yaml"
    monitor = {"port": _free_port()}
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(data)}, "binance": {"mock": mock}, "monitor": monitor}))
    env = {**os.environ, "LSQ_CONFIG": str(config), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    argv = [LSQ, "run", "--symbols", "4", "--dagster-port", str(dagster_port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300  # a cold dagster dev on a loaded 2-core machine took 129 s
        while not _answers(f"http://127.0.0.1:{dagster_port}/server_info"):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the Dagster UI never answered"
            time.sleep(1)
        status_file = DataPaths(data).collector_status
        wait_for("the collector to report itself running", lambda: _collector_running(status_file), 300)
        assert _answers(f"http://{base}/fapi/v1/ping")
        family = _descendants(proc.pid)
        commands = " ".join(Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in family if _alive(p))
        for part in ("sim serve", "collect", "warm-worker", "dagster dev", "trigger", "monitor"):
            assert part in commands, f"{part!r} is not running under lsq run: {commands}"
        assert (tmp_path / "dagster_home" / "dagster.yaml").exists()  # the chosen DAGSTER_HOME, not the project's
    finally:
        family = _descendants(proc.pid) if proc.poll() is None else set()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "lsq run: stopped" in output
    assert "INFO alembic" not in output  # instance migrations are not a healthy start's business
    assert "will not be used" not in output  # dagster dev runs in DAGSTER_HOME, whose dagster.yaml it does use
    assert "superseded" not in output  # nor that `dg dev` supersedes it, at every start
    assert "Checking for new runs for sensor" not in output  # the daemon's INFO line per sensor tick
    # it says what execution_sensor will trade: this configuration lists no account
    assert "lsq run: no account with credentials: target positions are computed, nothing is traded" in output
    # the last children may still be exiting when `lsq run` returns
    wait_for("every process to exit after Ctrl-C", lambda: not any(_alive(p) for p in family), 60)
    assert not _answers(f"http://127.0.0.1:{dagster_port}/server_info")


def test_make_run_trades_the_simulators_accounts_twap_by_default() -> None:
    """The shipped configuration: both simulator accounts have credentials, TWAP over the window, not a dry run."""
    from lsq.config import load_config
    from lsq.run import _execution_line

    settings = load_config(Path(__file__).resolve().parents[1] / "config" / "default.yaml")
    twap = settings.execution.executor.algorithm.twap
    assert (twap.horizon_seconds, twap.interval_seconds) == (240, 30)  # ends inside the 5-minute window
    assert _execution_line(settings).startswith(
        "each window's targets are executed for sim_alpha (twap), sim_beta (twap): orders are sent"
    )


@pytest.mark.slow
def test_lsq_stop_from_another_terminal_stops_everything_and_status_shows_each_part(tmp_path: Path) -> None:
    sim_port, monitor_port = _free_port(), _free_port()
    data = tmp_path / "data"
    base = f"127.0.0.1:{sim_port}"
    mock = {"rest_url": f"http://{base}", "ws_url": f"ws://{base}", "data_url": f"http://{base}/data"}
    config = tmp_path / "lsq.yaml"
    settings = {"data": {"data_dir": str(data)}, "binance": {"mock": mock}, "monitor": {"port": monitor_port}}
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "LSQ_CONFIG": str(config)}
    proc = subprocess.Popen(
        [LSQ, "run", "--no-dagster", "--symbols", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    paths = DataPaths(data)
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"http://127.0.0.1:{monitor_port}/api/status"):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the web monitor never answered"
            time.sleep(0.5)
        state = read_state(paths)
        assert state is not None and state["pid"] == proc.pid and state["running"]
        assert [p["name"] for p in state["parts"]] == ["simulator", "collector", "monitor"]
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/api/status", timeout=10) as response:
            shown = {p["name"]: p["state"] for p in json.loads(response.read())["parts"]}
        assert shown == {"simulator": "running", "collector": "running", "monitor": "running"}
        status_file = paths.collector_status
        wait_for("the collector to report itself running", lambda: _collector_running(status_file), 300)
        status = subprocess.run([LSQ, "status"], env=env, capture_output=True, text=True, timeout=60)
        lines = status.stdout.splitlines()
        for name in ("lsq run", "simulator", "collector", "monitor"):
            assert any(line.startswith(name) and "running" in line for line in lines), status.stdout
        assert any(line.startswith("connections") for line in lines), status.stdout  # the collector's heartbeat
        family = _descendants(proc.pid)
        stop = subprocess.run([LSQ, "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "lsq run: stopped" in output
    # the last children may still be exiting when `lsq run` returns
    wait_for("every process to exit after lsq stop", lambda: not any(_alive(p) for p in family), 60)
    state = read_state(paths)
    assert state is not None and not state["running"]
    assert all(p.get("exit_code") is not None for p in state["parts"]), state
    again = subprocess.run([LSQ, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no `lsq run` is running" in again.stdout


def test_dagster_dev_gets_a_workspace_whose_runs_match_the_warm_worker(tmp_path: Path) -> None:
    """`dagster dev` runs in DAGSTER_HOME, and Dagster takes a module's working directory relative to the process:
    the home's workspace names the project absolutely, the directory the warm worker imports from (a run of any
    other code location is refused by the worker and starts the slow way)."""
    from lsq.config import PROJECT_ROOT
    from lsq.run import home_workspace

    written = home_workspace(tmp_path)
    assert written.parent == tmp_path
    modules = [entry["python_module"] for entry in yaml.safe_load(written.read_text())["load_from"]]
    assert [m["module_name"] for m in modules] == ["lsq_pipeline.definitions"]
    assert [Path(m["working_directory"]) for m in modules] == [PROJECT_ROOT.resolve()]
