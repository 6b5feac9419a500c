"""`lsq collect` (the aggTrade collector daemon) and `lsq status` (its heartbeat, readable).

Only light modules are imported here: `lsq status` must answer in a fraction of a second, so the daemon (aiohttp,
websockets, polars) is imported by `lsq collect` when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from collectors.options import CollectorOptions
from collectors.status import format_status, liveness, read_status
from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.runstate import format_state, read_state

log = logging.getLogger(__name__)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = CollectorOptions()
    p = subparsers.add_parser("collect", help="run the aggTrade collector daemon (Ctrl-C / SIGTERM to stop)")
    p.add_argument(
        "--max-connection-age",
        type=_positive,
        default=defaults.max_connection_age_s,
        metavar="S",
        help="replace each stream connection after S seconds (Binance closes them at 24 h; default %(default)s)",
    )
    p.add_argument(
        "--silence-timeout",
        type=_positive,
        default=defaults.silence_s,
        metavar="S",
        help="recycle a connection silent for S seconds (default %(default)s)",
    )
    p.add_argument(
        "--streams-per-connection",
        type=int,
        default=defaults.streams_per_connection,
        metavar="N",
        help="streams per WebSocket connection, at most 1024 (default %(default)s)",
    )
    p.set_defaults(func=run_collect)
    s = subparsers.add_parser("status", help="show what `lsq run` started and the collector's heartbeat")
    s.add_argument("--json", action="store_true", help="print the raw status JSON")
    s.set_defaults(func=run_status)


def run_collect(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    try:
        options = CollectorOptions(
            max_connection_age_s=args.max_connection_age,
            silence_s=args.silence_timeout,
            streams_per_connection=args.streams_per_connection,
        )
    except ValueError as exc:
        print(f"lsq collect: {exc}", file=sys.stderr)
        return 2
    import asyncio
    import signal

    from collectors.daemon import Collector
    from collectors.flushing import DataDirUnwritable
    from collectors.rest_backfill import RestFetchError

    collector = Collector(settings, options)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await collector.run(stop)

    log.info("collecting into %s (mode %s)", settings.data_dir, settings.execution.mode)
    try:
        asyncio.run(main())
    except (DataDirUnwritable, RestFetchError) as exc:
        # Fail fast at start: a wrong URL or directory is a setup error an operator must see at once (a supervisor
        # restarting the daemon retries). Once running, outages are ridden out: streams reconnect, REST retries.
        print(f"lsq collect: {exc}", file=sys.stderr)
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    paths = DataPaths(settings.data_dir)
    if not args.json:
        try:
            state = read_state(paths)
        except ValueError as exc:
            print(f"lsq status: {exc}", file=sys.stderr)
            state = None
        if state is not None:
            print(format_state(state))
    path = paths.collector_status
    try:
        status = read_status(path)
    except ValueError as exc:
        print(f"lsq status: {exc}", file=sys.stderr)
        return 2
    if status is None:
        print(f"collector: not running (no status file at {path})")
        return 1
    print(json.dumps(status, indent=1, sort_keys=True) if args.json else format_status(status))
    return 0 if liveness(status) == "running" else 1
