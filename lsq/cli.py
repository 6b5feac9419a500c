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

from lsq.config import ConfigError

# Packages whose `cli.register(subparsers)` adds subcommands, in the order they appear in --help (`lsq run` last).
COMMAND_MODULES = (
    "simulator.cli",
    "collectors.cli",
    "collectors.history",
    "lsq_pipeline.cli",
    "factors.cli",
    "executors.cli",
    "monitoring.cli",
    "monitoring.web.cli",
)

# Commands served by one light module: `lsq status` must answer in well under a second, so it does not import every
# stage (Dagster, polars, python-binance) just to build the full parser.
LIGHT_COMMANDS = {"status": "collectors.cli"}
LIGHT_MODULES = tuple(LIGHT_COMMANDS.values())


def prepare_dagster(env: dict[str, str]) -> dict[str, str]:
    """`env` plus DAGSTER_HOME, with the instance's storage created: what `lsq run` gives Dagster's processes."""
    from lsq_pipeline.cli import dagster_env, prepare_instance

    prepared = {**env, **dagster_env()}
    prepare_instance(prepared)
    return prepared


def _command_modules(argv: list[str]) -> tuple[str, ...]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("-v", "--verbose", action="store_true")
    _, rest = pre.parse_known_args(argv)
    command = rest[0] if rest else None
    return (LIGHT_COMMANDS[command],) if command in LIGHT_COMMANDS else COMMAND_MODULES


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsq", description="LSQ long-short quant system for Binance USDⓈ-M")
    parser.add_argument("--config", help="configuration file (default: $LSQ_CONFIG or config/default.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    if modules != LIGHT_MODULES:
        from lsq import run  # urllib.request and the supervisor: not what `lsq status` needs

        run.register(sub, prepare_dagster)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_modules(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Dagster's instance creation runs alembic migrations, which log ~90 INFO lines a healthy start does not need.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"lsq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
