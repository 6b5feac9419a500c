"""`lsq`: the operator's command, and the system's one composition root.

Each stage's package registers its own subcommands; this module is the only place in the core that names stages
(tests/test_architecture.py holds every other core module to that). Stage modules load by name so a package that is
not installed (or not built yet) simply has no commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lsq import run
from lsq.config import ConfigError

# Packages whose `cli.register(subparsers)` adds subcommands, in the order they appear in --help (`lsq run` last).
COMMAND_MODULES = (
    "simulator.cli",
    "collectors.cli",
    "collectors.history",
    "lsq_pipeline.cli",
    "factors.cli",
    "executors.cli",
)


def prepare_dagster(env: dict[str, str]) -> dict[str, str]:
    """`env` plus DAGSTER_HOME, with the instance's storage created: what `lsq run` gives Dagster's processes."""
    from lsq_pipeline.cli import dagster_env, prepare_instance

    prepared = {**env, **dagster_env()}
    prepare_instance(prepared)
    return prepared


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsq", description="LSQ long-short quant system for Binance USDⓈ-M")
    parser.add_argument("--config", help="configuration file (default: $LSQ_CONFIG or config/default.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    run.register(sub, prepare_dagster)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"lsq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
