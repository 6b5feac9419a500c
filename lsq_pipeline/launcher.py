"""WarmRunLauncher: Dagster's default run launcher, with runs forked from a warm worker when one is up.

Configured in dagster.yaml (`run_launcher: {module: lsq_pipeline.launcher, class: WarmRunLauncher}`). For each
run the queue hands it, the launcher asks the warm run worker (lsq_pipeline.warm_worker) of this Dagster home to
fork it; the child runs Dagster's own run body, so the run has its usual lifecycle, events, logs and UI. Whenever
the worker cannot take a run (none running, it is stale after a code change and restarting, it serves another code
location, it does not answer), the run is launched exactly as DefaultRunLauncher launches it, through the code
server, with an engine event saying why (and, when none was running, a worker is started for the next run): no run
is ever lost to the worker.

Forked runs carry their process id in the `lsq/warm_pid` tag: run monitoring asks `check_run_worker_health` (a
child that died without finishing its run is reported FAILED, and the daemon marks the run failed), and the UI's
terminate sends that process SIGINT, which Dagster's run body turns into a CANCELED run. The worker and its runs
are processes of this machine, as with the default launcher.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from dagster import DagsterRun, DefaultRunLauncher
from dagster._config.config_schema import UserConfigSchema
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value
from dagster._serdes.config_class import ConfigurableClassData

from lsq.runstate import pid_alive
from lsq_pipeline.warm_worker import PID_TAG, request, socket_path

NO_WORKER = "no warm run worker is running"


class WarmRunLauncher(DefaultRunLauncher):
    """Runs forked from the warm worker; DefaultRunLauncher's launch whenever the worker cannot take one."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, start_worker: bool = True) -> None:
        super().__init__(inst_data=inst_data)
        self._start_worker = start_worker

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        from dagster import Bool, Field

        return {
            "start_worker": Field(
                Bool,
                is_required=False,
                default_value=True,
                description="start a warm worker when none answers (off: only use one started by `lsq run`)",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, start_worker=bool(config_value.get("start_worker", True)))

    @property
    def socket(self) -> Path:
        return socket_path(self._instance.root_directory)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        reason = self._launch_warm(run)
        if reason is None:
            return
        self._instance.report_engine_event(f"Launching through the code server: {reason}.", run, cls=self.__class__)
        super().launch_run(context)
        pointer = self._pointer(run)
        if self._start_worker and pointer is not None and reason == NO_WORKER:  # a refusing worker restarts itself
            start_worker(self.socket, *pointer)

    @staticmethod
    def _pointer(run: DagsterRun) -> tuple[str, str] | None:
        """The run's code location as (module, working directory), if it is loaded from a Python module."""
        origin = run.job_code_origin
        pointer = origin.repository_origin.code_pointer if origin is not None else None
        if not isinstance(pointer, ModuleCodePointer) or pointer.working_directory is None:
            return None
        return pointer.module, str(Path(pointer.working_directory).resolve())

    def _launch_warm(self, run: DagsterRun) -> str | None:
        """Hand the run to the worker; None when it took it, else why not."""
        pointer = self._pointer(run)
        if pointer is None or run.job_code_origin is None:
            return "the run's code location is not a Python module with a working directory"
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        message = {"module": pointer[0], "working_directory": pointer[1], "execute_run_args": serialize_value(args)}
        try:
            reply = request(self.socket, message)
        except (FileNotFoundError, ConnectionRefusedError):
            return NO_WORKER
        except (OSError, ValueError) as exc:
            return f"the warm run worker did not take the run ({exc})"
        if not reply.get("ok"):
            return f"the warm run worker refused the run ({reply.get('reason')})"
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(reply["pid"])})
        self._run_ids.add(run.run_id)
        return None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or PID_TAG not in run.tags:
            return bool(super().terminate(run_id))
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[PID_TAG]), 2)  # SIGINT: Dagster's run body stops the run as CANCELED
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if PID_TAG not in run.tags:
            # Launched through the code server: DefaultRunLauncher checks nothing there, and neither do we.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "launched through the code server: not checked")
        pid = int(run.tags[PID_TAG])
        if pid_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the warm run process (pid {pid}) exited without ending the run",
            run_worker_id=str(pid),
        )


def start_worker(path: Path, module: str, working_directory: str, parent: int | None = None) -> None:
    """Start a warm worker in the background (it exits at once if one already serves `path`, and when `parent`,
    by default this process, is gone). Its output goes to `<socket>.log`."""
    argv = [sys.executable, "-m", "lsq_pipeline.warm_worker", "--socket", str(path), "--module", module]
    argv += ["--working-directory", working_directory, "--parent", str(parent or os.getpid())]
    with open(f"{path}.log", "ab") as log:
        subprocess.Popen(argv, cwd=working_directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
