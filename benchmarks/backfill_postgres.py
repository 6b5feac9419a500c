"""benchmarks/backfill_days.sh with the Dagster instance on a throw-away PostgreSQL server (tests/postgres_server.py).

    .venv/bin/python benchmarks/backfill_postgres.py [DAYS]

The instance configuration is the project's dagster.yaml plus a `storage: postgres` section; the server is Debian's,
started for the run and deleted after it (fsync off, as in the tests: a figure for Dagster's bookkeeping, not for
a durable production server).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # postgres_server, shared with the tests


def main() -> int:
    from postgres_server import postgres_server

    days = sys.argv[1] if len(sys.argv) > 1 else "30"
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        config["storage"] = server.storage_config(server.create_database("dagster"))
        path = Path(tmp) / "dagster.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "DAGSTER_YAML": str(path)}
        return subprocess.run([str(ROOT / "benchmarks" / "backfill_days.sh"), days], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
