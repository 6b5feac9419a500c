"""`lsq execute`, `lsq halt`, `lsq resume`, `lsq orders`: the operator's handles on execution.

`lsq execute` runs exactly the function the Dagster run calls (executors.run.run_account) and prints its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from executors.journal import Journal, journal_path
from executors.killswitch import halt_account
from executors.run import run_account
from executors.safety import HaltMode, LiveNotConfirmed, clear_halt, read_halt
from lsq.clock import SYSTEM_CLOCK
from lsq.config import Settings, load_config
from lsq.paths import DataPaths
from lsq.targets import TargetFileError
from lsq.timelabels import label_of


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("execute", help="trade one account toward its latest (or a named) target file")
    run.add_argument("--account", required=True, help="account_id from the configuration")
    run.add_argument("--targets", type=Path, help="target file (default: the account's latest; any age)")
    run.add_argument("--algorithm", choices=("market", "twap", "vwap"), help="override the configured algorithm")
    run.add_argument("--dry-run", action="store_true", help="plan, journal and show; send no order")
    run.add_argument(
        "--confirm-live", default="", metavar="ACCOUNTS", help="comma-separated accounts confirmed for live trading"
    )
    run.set_defaults(func=run_execute)

    halt = subparsers.add_parser("halt", help="kill switch: cancel our open orders and send nothing more")
    halt.add_argument("account")
    halt.add_argument("--reduce-only", action="store_true", help="let reductions through, block increases")
    halt.add_argument("--reason", default="operator", help="recorded with the switch")
    halt.set_defaults(func=run_halt)

    resume = subparsers.add_parser("resume", help="lift the kill switch of an account")
    resume.add_argument("account")
    resume.set_defaults(func=run_resume)

    orders = subparsers.add_parser("orders", help="the execution journal of an account: runs and child orders")
    orders.add_argument("--account", required=True)
    orders.add_argument("--limit", type=int, default=50, help="child orders shown (latest first)")
    orders.set_defaults(func=run_orders)


def run_execute(args: argparse.Namespace) -> int:
    from binance.exceptions import BinanceAPIException, BinanceRequestException
    from requests import RequestException

    settings = load_config(args.config)
    confirmed = [a.strip() for a in args.confirm_live.split(",") if a.strip()]
    try:
        report = run_account(
            settings,
            args.account,
            args.targets,
            algorithm=args.algorithm,
            dry_run=True if args.dry_run else None,
            confirm_live=confirmed,
        )
    except (LiveNotConfirmed, TargetFileError, ValueError) as exc:
        print(f"lsq execute: {exc}", file=sys.stderr)
        return 2
    except (BinanceAPIException, BinanceRequestException, RequestException) as exc:
        print(f"lsq execute: the exchange failed the run ({exc}); it is journaled: run again", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=1, default=str))
    return 0 if report.status in ("completed", "dry_run") else 1


def _known(settings_path: str | None, account: str) -> Settings:
    settings = load_config(settings_path)
    ids = [a.account_id for a in settings.execution.accounts_for()]
    if account not in ids:
        raise SystemExit(f"lsq: no account {account!r} in execution.{settings.execution.mode} ({', '.join(ids)})")
    return settings


def run_halt(args: argparse.Namespace) -> int:
    settings = _known(args.config, args.account)
    mode: HaltMode = "reduce_only" if args.reduce_only else "halt"
    outcome = halt_account(settings, args.account, mode, args.reason, SYSTEM_CLOCK)
    print(f"{args.account}: {mode.replace('_', '-')} (lsq resume {args.account} to trade again)")
    if outcome.cancel_error:
        print(
            f"lsq halt: the switch is set, but cancelling our open orders failed: {outcome.cancel_error}",
            file=sys.stderr,
        )
        return 1
    if outcome.cancelled is not None:
        print(f"cancelled {outcome.cancelled} of our open orders; {outcome.foreign} others left alone")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    paths = DataPaths(_known(args.config, args.account).data_dir)
    was = read_halt(paths, args.account)
    clear_halt(paths, args.account)
    print(f"{args.account}: trading resumed" + ("" if was else " (it was not halted)"))
    return 0


def run_orders(args: argparse.Namespace) -> int:
    paths = DataPaths(_known(args.config, args.account).data_dir)
    halt = read_halt(paths, args.account)
    print(f"{args.account}: {'HALTED ' + halt.mode + ' (' + halt.reason + ')' if halt else 'trading allowed'}")
    path = journal_path(paths, args.account)
    if not path.exists():
        print("no journal yet")
        return 0
    with Journal(path) as journal:
        for run in journal.runs(10):
            dry = " (dry run)" if run["dry_run"] else ""
            window = label_of(int(run["window_ms"])) if run["window_ms"] else "-"
            print(f"run {run['run_id']} window {window} {run['algorithm']}{dry}: {run['status']}")
        rows = journal.children()[-args.limit :]
        for c in reversed(rows):
            when = datetime.fromtimestamp(c.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"{when} {c.client_id:36} {c.symbol:12} {c.side:4} {c.type:6} {c.qty} "
                f"filled {c.executed_qty} @ {c.avg_price} {c.status}" + (f" ({c.error})" if c.error else "")
            )
    return 0
