"""`lsq status` printing a live collector's heartbeat: wall and CPU seconds per call, and the machine's load.

The wall time on a loaded machine is mostly waiting for a core; the CPU time is what a quiet machine's wall time
comes to. Run: `.venv/bin/python benchmarks/bench_status.py [runs]`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from collectors.status import write_status
from lsq.paths import DataPaths
from lsq.timelabels import now_ms

LSQ = str(Path(sys.executable).with_name("lsq"))


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "lsq.yaml"
        config.write_text(yaml.safe_dump({"data": {"data_dir": str(Path(tmp) / "data")}}))
        status = {
            "running": True,
            "pid": os.getpid(),
            "started_at": now_ms(),
            "connections": [{"up": True}],
            "symbols": 40,
        }
        walls: list[float] = []
        cpus: list[float] = []
        for _ in range(runs):
            write_status(DataPaths(Path(tmp) / "data").collector_status, {**status, "updated_at": now_ms()})
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            out = subprocess.run([LSQ, "--config", str(config), "status"], capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            assert out.returncode == 0 and "running, pid" in out.stdout, out.stdout + out.stderr
    load = os.getloadavg()[0]
    print(f"lsq status (heartbeat), {runs} runs, load average {load:.1f} on {os.cpu_count()} cores")
    print(f"wall: median {statistics.median(walls):.3f} s, min {min(walls):.3f} s")
    print(f"cpu:  median {statistics.median(cpus):.3f} s, min {min(cpus):.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
