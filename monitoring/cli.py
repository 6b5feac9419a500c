"""`lsq watch`: the account watcher (every account of the configured mode) until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from lsq.config import load_config

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("watch", help="follow every account's state into data/monitoring (Ctrl-C to stop)")
    p.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds between REST snapshots, at most 60 (default %(default)s)",
    )
    p.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    from monitoring.watcher import Watcher, WatcherOptions

    if not 0 < args.interval <= 60:
        print(f"lsq watch: --interval must be more than 0 and at most 60 seconds, got {args.interval}", file=sys.stderr)
        return 2
    settings = load_config(args.config)
    options = WatcherOptions(snapshot_interval_s=args.interval)
    watcher = Watcher(settings, options=options)
    if not watcher.accounts:
        print(f"lsq watch: no account with credentials in mode {settings.execution.mode}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await watcher.run(stop)

    names = ", ".join(a.account_id for a in watcher.accounts)
    log.info("watching %s (mode %s) into %s", names, settings.execution.mode, settings.data_dir / "monitoring")
    asyncio.run(main())
    return 0
