"""Run every benchmarks/bench_*.py in turn and print the machine they ran on."""

from __future__ import annotations

import os
import platform
import runpy
import sys
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
    )


def main(names: list[str]) -> int:
    print(f"machine: {machine()}", flush=True)
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    for script in scripts:
        print(f"\n== {script.stem}", flush=True)
        sys.argv = [str(script)]  # the names chose the scripts; each runs with its own defaults
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
