"""`lsq watch`: the account watcher (every account of the configured mode) until Ctrl-C / SIGTERM.
`lsq report`: an account's strategy report over a day or any range, as JSON on stdout and JSON + CSV files."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS

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
    r = subparsers.add_parser("report", help="an account's strategy report (fees, funding, PnL split, shortfall)")
    r.add_argument("account", help="account_id")
    r.add_argument("--day", type=_day, help="one UTC day, YYYY-MM-DD (default: today)")
    r.add_argument("--start", type=_day, help="first UTC day of a range, YYYY-MM-DD")
    r.add_argument("--end", type=_day, help="last UTC day of a range (inclusive), YYYY-MM-DD")
    r.add_argument("--out", type=Path, help="also write report.json and the tables as CSV into this directory")
    r.set_defaults(func=run_report)


def _day(text: str) -> int:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None
    return int(day.timestamp() * 1000)


def run_report(args: argparse.Namespace) -> int:
    from monitoring.report import account_report

    settings = load_config(args.config)
    if args.day is not None and (args.start is not None or args.end is not None):
        print("lsq report: give --day or --start/--end, not both", file=sys.stderr)
        return 2
    today = int(datetime.now(UTC).timestamp() * 1000) // DAY_MS * DAY_MS
    start = args.day if args.day is not None else (args.start if args.start is not None else today)
    end = (args.end if args.end is not None else start) + DAY_MS
    if end <= start:
        print("lsq report: --end is before --start", file=sys.stderr)
        return 2
    paths = DataPaths(settings.data_dir)
    if not paths.monitoring_account(args.account).exists():
        print(f"lsq report: nothing stored for account {args.account!r} under {paths.monitoring}", file=sys.stderr)
        return 2
    report = account_report(paths, args.account, start, end)
    if args.out is not None:
        for path in report.write(args.out):
            log.info("wrote %s", path)
    print(report.to_json())
    return 0


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
