"""`lsq run`: the whole system on one machine: simulator, collector, account watcher and `dagster dev`, stopped
together.

Each child runs in its own process group, so Ctrl-C (or SIGTERM) reaches every process they spawned
(dagster dev starts a webserver, a daemon and code servers) and nothing is left behind. The children are `lsq`
commands and `dagster dev`; the Dagster instance is prepared by a function the composition root (lsq.cli) passes in,
so this module uses no stage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from lsq.config import PROJECT_ROOT, Settings, load_config
from lsq.paths import DataPaths, atomic_write_text
from lsq.runstate import pid_alive, read_state, supervisor_running, write_state
from lsq.timelabels import now_ms

STOP_GRACE_SECONDS = 15.0
# `dagster dev` warns at every start that it is superseded by `dg dev` (dagster-dg-cli, not a dependency).
DEV_SUPERSEDED = "ignore:Function `dev_command` is superseded"
# env -> the variables `dagster dev` and the Dagster commands need (DAGSTER_HOME), its storage created.
PrepareDagster = Callable[[dict[str, str]], dict[str, str]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], prepare_dagster: PrepareDagster) -> None:
    parser = sub.add_parser("run", help="start simulator + collector + dagster dev (the embedded default)")
    parser.add_argument("--no-dagster", action="store_true", help="only the simulator and the collector")
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument(
        "--rate-limit-multiplier",
        type=float,
        default=20.0,
        help="raise the simulator's advertised rate limits, so the first backfill of a day of history over REST "
        "takes minutes rather than an hour (default 20; 1 = Binance's own limits)",
    )
    parser.set_defaults(func=partial(run, prepare_dagster=prepare_dagster))
    stop = sub.add_parser("stop", help="stop a running `lsq run` (from another terminal), cleanly")
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to stop (default 60)")
    stop.set_defaults(func=run_stop)


@dataclass
class Supervisor:
    """Starts children in their own process groups and stops them all, politely first."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    oneshots: set[str] = field(default_factory=set)
    paths: DataPaths | None = None  # where data/run/state.json is kept, for `lsq stop`, `lsq status`, the monitor
    parts: list[dict[str, object]] = field(default_factory=list)
    started_at: int = field(default_factory=now_ms)

    def save(self, running: bool = True) -> None:
        """Record the supervisor and every part (pid, start, end) in data/run/state.json, atomically."""
        if self.paths is not None:
            state = {"pid": os.getpid(), "started_at": self.started_at, "running": running, "parts": self.parts}
            write_state(self.paths, {**state, "updated_at": now_ms()})

    def _ended(self, proc: subprocess.Popen[bytes], code: int) -> None:
        for part in self.parts:
            if part["pid"] == proc.pid and part.get("exit_code") is None:
                part.update(exit_code=code, ended_at=now_ms())
        self.save()

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        oneshot: bool = False,
        cwd: Path = PROJECT_ROOT,
    ) -> subprocess.Popen[bytes]:
        """Start a child; a `oneshot` child finishes on its own, and its end (even a failure) stops nothing else."""
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
        self.children.append((name, proc))
        if oneshot:
            self.oneshots.add(name)
        self.parts.append({"name": name, "pid": proc.pid, "started_at": now_ms(), "oneshot": oneshot})
        self.save()
        print(f"lsq run: started {name} (pid {proc.pid})", flush=True)
        return proc

    def first_exited(self) -> tuple[str, int] | None:
        for name, proc in list(self.children):
            code = proc.poll()
            if code is None:
                continue
            if name not in self.oneshots:
                return name, code
            self.children.remove((name, proc))
            self._ended(proc, code)
            _signal_group(proc, signal.SIGKILL)  # anything it left behind in its group
            outcome = "finished" if code == 0 else f"failed with code {code} (the live system keeps running)"
            print(f"lsq run: {name} {outcome}", flush=True)
        return None

    def stop(self) -> None:
        for _, proc in reversed(self.children):
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"lsq run: {name} did not stop in time, killing it", flush=True)
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # stragglers the child left in its group
            self._ended(proc, proc.returncode)
        self.save(running=False)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_for_http(url: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll `url` until it answers 200, the time is up, or `alive()` turns false (the server died, or Ctrl-C)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            time.sleep(0.2)
    return False


def home_workspace(home: Path) -> Path:
    """The project's workspace.yaml with each code location's working directory made absolute, written into the
    Dagster home that `dagster dev` runs in. Dagster takes a python_module's working directory relative to the
    process's own, so a relative one would name the home, and runs would not match the warm run worker's code
    location (lsq_pipeline.warm_worker), which imports from the project and refuses any other."""
    import yaml

    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    for entry in workspace["load_from"]:
        module = entry.get("python_module")
        if isinstance(module, dict):
            module["working_directory"] = str((PROJECT_ROOT / module.get("working_directory", ".")).resolve())
    target = home / "workspace.yaml"
    atomic_write_text(target, yaml.safe_dump(workspace, sort_keys=False))
    return target


BACKFILL_NICENESS = 10


def _lsq(*args: str) -> list[str]:
    return [sys.executable, "-m", "lsq.cli", *args]


def _execution_line(settings: Settings) -> str:
    """What the Dagster daemon's execution_sensor will trade, so nobody is surprised by orders on the simulator."""
    accounts, _ = settings.usable_accounts()
    if not accounts:
        return "no account with credentials: target positions are computed, nothing is traded"
    executor = settings.execution.executor
    algos = ", ".join(f"{a.account_id} ({executor.algorithm_for(a.account_id).name})" for a in accounts)
    mode = "dry run, no order is sent" if settings.execution.dry_run else "orders are sent"
    return f"each window's targets are executed for {algos}: {mode}; `lsq halt ACCOUNT` stops one"


def run(args: argparse.Namespace, prepare_dagster: PrepareDagster) -> int:
    settings: Settings = load_config(args.config)
    if settings.execution.mode != "mock":
        print("lsq run starts the embedded simulator; set execution.mode: mock (or run the pieces yourself)")
        return 2
    rest = urlparse(settings.endpoints().rest_url)
    env = dict(os.environ)
    if args.config:
        env["LSQ_CONFIG"] = str(Path(args.config).resolve())
    sup = Supervisor(paths=DataPaths(settings.data_dir))
    sup.save()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        host, port = rest.hostname or "127.0.0.1", rest.port or 8765
        sim_argv = ["sim", "serve", "--host", host, "--port", str(port)]
        sim_argv += ["--seed", str(args.seed), "--symbols", str(args.symbols)]
        sim = sup.start("simulator", _lsq(*sim_argv, "--rate-limit-multiplier", str(args.rate_limit_multiplier)), env)
        if not wait_for_http(f"http://{host}:{port}/fapi/v1/ping", 30, lambda: not stopping and sim.poll() is None):
            if not stopping:
                print("lsq run: the simulator did not answer within 30 s", file=sys.stderr)
            return 0 if stopping else 1
        sup.start("collector", _lsq("collect"), env)
        if settings.usable_accounts()[0]:
            sup.start("account watcher", _lsq("watch"), env)
        else:
            print("lsq run: no account with credentials: no account watcher", flush=True)
        if not args.no_dagster:
            dagster_env = prepare_dagster(env)
            # The backfill runs at a lower CPU priority: on a small machine it would otherwise slow the first live
            # windows' runs, which trade, for minutes.
            backfill = ["nice", "-n", str(BACKFILL_NICENESS), *_lsq("backfill", "--recent")]
            sup.start("recent backfill", backfill, dagster_env, oneshot=True)
            sup.start("warm run worker", _lsq("warm-worker"), dagster_env, oneshot=True)
            # Warnings and errors only from the webserver and the daemon (at INFO the daemon logs every sensor
            # tick); runs log at dagster.yaml's python_logs level. In DAGSTER_HOME: from the project root dagster
            # dev warns that the project's dagster.yaml "will not be used" (it is, as DAGSTER_HOME's copy); nothing
            # it runs depends on the working directory.
            dagster_cli = str(Path(sys.executable).with_name("dagster"))
            dagster = [dagster_cli, "dev", "-h", "127.0.0.1", "-p", str(args.dagster_port)]
            dagster += ["--log-level", "warning", "-w", str(home_workspace(Path(dagster_env["DAGSTER_HOME"])))]
            quiet = {**dagster_env, "PYTHONWARNINGS": DEV_SUPERSEDED}
            sup.start("dagster dev", dagster, quiet, cwd=Path(dagster_env["DAGSTER_HOME"]))
            sup.start("trigger", _lsq("trigger", "--dagster-url", f"http://127.0.0.1:{args.dagster_port}"), dagster_env)
            print(f"lsq run: Dagster UI on http://127.0.0.1:{args.dagster_port}", flush=True)
            print(f"lsq run: {_execution_line(settings)}", flush=True)
        sup.start("monitor", _lsq("monitor"), env)
        print(f"lsq run: web monitor on http://{settings.monitor.host}:{settings.monitor.port}", flush=True)
        print(f"lsq run: simulator on {settings.endpoints().rest_url}; Ctrl-C stops everything", flush=True)
        while not stopping:
            exited = sup.first_exited()
            if exited:
                print(f"lsq run: {exited[0]} exited with code {exited[1]}; stopping the rest", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        sup.stop()
        print("lsq run: stopped", flush=True)


def run_stop(args: argparse.Namespace) -> int:
    """Signal the supervisor recorded in data/run/state.json (SIGTERM, as Ctrl-C) and wait until it is gone."""
    paths = DataPaths(load_config(args.config).data_dir)
    try:
        state = read_state(paths)
    except ValueError as exc:
        print(f"lsq stop: {exc}", file=sys.stderr)
        return 2
    if state is None or not supervisor_running(state):
        print("lsq stop: no `lsq run` is running here")
        return 1
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    print(f"lsq stop: asked lsq run (pid {pid}) to stop", flush=True)
    deadline = time.monotonic() + args.timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        print(f"lsq stop: lsq run (pid {pid}) is still stopping after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    print("lsq stop: stopped")
    return 0
