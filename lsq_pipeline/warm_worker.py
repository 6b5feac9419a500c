"""The warm run worker: imports Dagster, the instance's storage and the code location once (its Definitions
resolved), then forks every run from that state.

A run started the default way (the code server spawning `dagster api execute_run`) pays for a fresh interpreter
and for importing dagster, polars and the code location again, every run: most of the seconds between a window's
end and its bars. A forked child starts with all of that already in memory and runs exactly what
`dagster api execute_run` runs (Dagster's own run body: STARTING -> STARTED -> SUCCESS/FAILURE, logs, compute
logs, the cancellation thread), against its own instance connection.

Fork safety: the worker itself never executes anything: it opens no instance, database, gRPC channel or thread
before forking, and refuses to serve if importing the code location started a thread.
Freshness: the worker notes every project source file it imported and the configuration file, with their sizes and
modification times. A request that finds one changed (an edit, which `dagster dev` reloads into its code server)
is refused as stale and the worker starts itself again (exec, same pid) with the new code, so it never runs old
code: the launcher (lsq_pipeline.launcher) launches that run through the code server instead.

    python -m lsq_pipeline.warm_worker --socket PATH --module lsq_pipeline.definitions --working-directory DIR
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.timelabels import day_start

MODULE = "lsq_pipeline.definitions"  # workspace.yaml
PID_TAG = "lsq/warm_pid"  # on a run forked by the worker: the process running it (health checks, termination)
REPLY_TIMEOUT_S = 30.0
ACCEPT_POLL_S = 1.0
# What every run process imported after fork when only the code location was preloaded (measured: 440 modules,
# sqlalchemy, alembic and Dagster's instance and storage among them, 27 s of a run's start under load): the run body,
# the instance, its sqlite storage and migrations, the in-process executor. Imported, never called, before forking.
RUN_MODULES = (
    "dagster._cli.api",
    "dagster._core.instance.factory",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.executor.in_process",
    "dagster._core.execution.plan.active",
    "dagster._daemon.auto_run_reexecution.auto_run_reexecution",
    "alembic.command",
    "alembic.runtime.migration",
)
LOCK_WAIT_S = 10.0  # a stale worker releases its lock within milliseconds of refusing a run


def socket_path(instance_root: str) -> Path:
    """The worker's socket for a Dagster home. Under the temporary directory, named by a hash of the home: a Unix
    socket path may not exceed 107 bytes, which a home deep in a test's temporary directory would."""
    digest = hashlib.sha1(str(Path(instance_root).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lsq-warm-{digest}.sock"


def request(path: Path, message: dict[str, Any], timeout_s: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
    """One JSON line to the worker, one JSON line back. OSError when no worker answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as stream:
            line = stream.readline()
    if not line:
        raise ConnectionError("the warm run worker closed the connection without an answer")
    reply: dict[str, Any] = json.loads(line)
    return reply


def _signature(paths: list[Path]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            stat = path.stat()
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


def _imported_sources(root: Path) -> list[Path]:
    """The project's source files in sys.modules (not the virtualenv's), plus the configuration file that the code
    location reads at import."""
    from lsq.config import DEFAULT_CONFIG_PATH

    sources = {Path(os.environ.get("LSQ_CONFIG") or DEFAULT_CONFIG_PATH).resolve()}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and (path := Path(file).resolve()).is_relative_to(root) and "site-packages" not in path.parts:
            sources.add(path)
    return sorted(sources)


class Worker:
    """The state the runs fork from, and what it was built from (to tell when it is stale)."""

    def __init__(self, module: str, working_directory: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        import dagster as dg

        self.module = module
        self.clock = clock
        self.working_directory = working_directory
        os.chdir(working_directory)
        sys.path.insert(0, str(working_directory))
        location = importlib.import_module(module)  # the code location, as the code server loads it
        for value in vars(location).values():
            if isinstance(value, dg.Definitions):  # resolved once here (cached on the object), not in every run
                value.get_repository_def().get_all_jobs()
        for name in RUN_MODULES:
            importlib.import_module(name)
        home = os.environ.get("DAGSTER_HOME")
        if home:  # the instance's own classes (sqlite or PostgreSQL storage, compute logs, ...), imported, not opened
            from dagster._core.instance.ref import InstanceRef

            ref = InstanceRef.from_dir(home)
            for field in ref._fields:
                if field.endswith("_data") and (data := getattr(ref, field)) is not None:
                    importlib.import_module(data.module_name)
        self.sources = _imported_sources(working_directory)
        self.signature = _signature(self.sources)
        self.day = day_start(clock.now_ms())  # the code location fixes its first partition day at import

    def stale(self) -> str | None:
        if day_start(self.clock.now_ms()) != self.day:
            return "the UTC day changed since the worker imported the code location"
        now = _signature(self.sources)
        changed = [path for path in self.sources if now.get(str(path)) != self.signature.get(str(path))]
        return f"{changed[0]} changed since the worker imported it" if changed else None

    def refusal(self, message: dict[str, Any]) -> str | None:
        if message.get("module") != self.module or message.get("working_directory") != str(self.working_directory):
            return f"the worker serves {self.module} in {self.working_directory}, not this run's code location"
        return self.stale()


def _execute(execute_run_args: str) -> None:
    """In the forked child: `dagster api execute_run`'s own body, on an instance connection of the child's own."""
    from dagster._cli.api import execute_run_command

    body = execute_run_command.callback  # the click command's function, without its argv parsing
    if body is None:
        raise RuntimeError("dagster api execute_run has no body in this Dagster version")
    body(execute_run_args, None)


def _child(conn: socket.socket, listener: socket.socket, lock_fd: int, message: dict[str, Any]) -> None:
    """The forked run process: never returns into the worker's loop."""
    code = 1
    try:
        listener.close()
        conn.close()
        os.close(lock_fd)  # the worker's lock is the worker's: a long run must not keep a restarted worker out
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _execute(message["execute_run_args"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # the run's own failure is in its event log; this is the worker's
        print(f"warm run worker: a forked run failed to execute: {exc!r}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _lock(fd: int, wait_s: float) -> bool:
    """Take the lock, waiting up to `wait_s` for a stale worker to finish exiting."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@contextlib.contextmanager
def _only_worker(path: Path) -> Iterator[int | None]:
    """Hold the socket's lock file for the worker's lifetime: a second worker for the same home exits at once."""
    with open(f"{path}.lock", "w") as lock:
        if not _lock(lock.fileno(), LOCK_WAIT_S):
            yield None
            return
        try:
            yield lock.fileno()
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def serve(path: Path, worker: Worker, parent_pid: int, lock_fd: int) -> tuple[str, bool]:
    """Accept runs until the worker is stale, its parent is gone, or SIGTERM/SIGINT: why it stopped, and whether it
    should start again (stale: with the new code)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    listener.settimeout(ACCEPT_POLL_S)
    print(f"warm run worker: serving {worker.module} on {path} (pid {os.getpid()})", flush=True)
    try:
        while True:
            _reap()
            if os.getppid() != parent_pid:
                return "the process that started it is gone", False
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(REPLY_TIMEOUT_S)
                with conn.makefile("rb") as stream:
                    message = json.loads(stream.readline() or b"{}")
                if message.get("stop"):
                    conn.sendall(b'{"ok": true}\n')
                    return "asked to stop", False
                reason = worker.refusal(message)
                if reason is not None:
                    conn.sendall(json.dumps({"ok": False, "reason": reason}).encode() + b"\n")
                    return reason, True
                pid = os.fork()
                if pid == 0:
                    _child(conn, listener, lock_fd, message)
                conn.sendall(json.dumps({"ok": True, "pid": pid}).encode() + b"\n")
    finally:
        listener.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, help="default: the one of $DAGSTER_HOME (socket_path)")
    parser.add_argument("--module", default=MODULE, help="the code location's module (default %(default)s)")
    parser.add_argument("--working-directory", type=Path, default=Path.cwd(), help="its working directory")
    parser.add_argument("--parent", type=int, default=os.getppid(), help="exit when this process is gone")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve until stale, orphaned or stopped (`lsq warm-worker`, and what the launcher starts)."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    path = args.socket or socket_path(os.environ.get("DAGSTER_HOME") or ".")
    with _only_worker(path) as lock_fd:
        if lock_fd is None:
            print(f"warm run worker: another worker serves {path}", flush=True)
            return 0
        worker = Worker(args.module, args.working_directory.resolve())
        if threading.active_count() > 1:
            names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
            print(f"warm run worker: importing {args.module} started threads ({names}): not fork-safe", flush=True)
            return 1
        reason, again = serve(path, worker, args.parent, lock_fd)
    print(f"warm run worker: stopped: {reason}", flush=True)
    if again:  # the same process (pid, process group, parent) with fresh code: a supervisor sees no exit
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
