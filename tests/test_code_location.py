"""The code location as Dagster's own tooling sees it: `dagster definitions validate` on the project's workspace."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_validates_the_workspace(tmp_path: Path) -> None:
    dagster = str(Path(sys.executable).with_name("dagster"))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LSQ_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
