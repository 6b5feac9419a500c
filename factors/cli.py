"""`lsq factor list` and `lsq factor run NAME --at WINDOW`: see and try factors without Dagster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

from factors.data_view import TRADING_UNIVERSE, AlphaDataView
from factors.discovery import BUILTIN_DIR, discover
from factors.engine import run_calculators
from lsq.config import load_config
from lsq.paths import DataPaths
from lsq.timelabels import parse_window


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("factor", help="alpha factors: list them, or run one alone on stored data")
    actions = parser.add_subparsers(dest="factor_command", required=True, metavar="ACTION")
    folder_help = "also load calculators from this folder (repeatable); default: factors/calculators/ only"

    listing = actions.add_parser("list", help="discovered calculators, whether enabled, and any loading problems")
    listing.add_argument("--folder", action="append", type=Path, default=[], help=folder_help)
    listing.set_defaults(func=run_list)

    one = actions.add_parser("run", help="run one calculator for a sealed window and print its weights and timing")
    one.add_argument("name", help="calculator name (see `lsq factor list`)")
    one.add_argument(
        "--at",
        required=True,
        metavar="WINDOW",
        help="the sealed window, by any of its names: label YYYY-MM-DD-HHH (001..288, UTC), partition key "
        "YYYY-MM-DD-HH:MM (its start) or positions stamp YYYYmmdd_HHMMSS (its end)",
    )
    one.add_argument("--top", type=int, default=15, help="longs and shorts to print (default 15)")
    one.add_argument("--folder", action="append", type=Path, default=[], help=folder_help)
    one.set_defaults(func=run_one)


def _folders(extra: list[Path]) -> list[Path]:
    return [BUILTIN_DIR, *extra]


def run_list(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    calculators, problems = discover(_folders(args.folder))
    enabled = set(settings.strategy.calculators.enabled)
    weights = settings.strategy.calculators.weights
    for calc in calculators:
        state = "enabled" if not enabled or calc.name in enabled else "disabled"
        print(f"{calc.name:<45} {state:<9} weight {weights.get(calc.name, 1.0):g}  ({type(calc).__module__})")
    if not calculators:
        print("no calculators found")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def run_one(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    try:
        window_ms = parse_window(args.at)
    except ValueError as exc:
        print(f"lsq factor run: {exc}", file=sys.stderr)
        return 2
    calculators, problems = discover(_folders(args.folder))
    chosen = [c for c in calculators if c.name == args.name]
    if not chosen:
        known = ", ".join(c.name for c in calculators) or "none"
        print(f"lsq factor run: no calculator named {args.name!r} (known: {known})", file=sys.stderr)
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 2
    paths = DataPaths(settings.data_dir)
    started = time.perf_counter()
    source = f"{TRADING_UNIVERSE} universe"
    try:
        view = AlphaDataView.from_storage(paths, window_ms, settings.strategy.history_days)
    except FileNotFoundError as exc:
        print(f"note: {exc}; using every symbol with stored bars", file=sys.stderr)
        source = "symbols with bars"
        view = AlphaDataView.from_storage(paths, window_ms, settings.strategy.history_days, universe_version=None)
    load_seconds = time.perf_counter() - started
    if not view.universe:
        print(f"lsq factor run: no bars stored under {paths.root} for the window {args.at}", file=sys.stderr)
        return 2
    print(
        f"{args.name} at {view.label}: {len(view.universe)} symbols, {view.bars_panel.height} bar rows "
        f"({source}), loaded in {load_seconds:.3f} s"
    )
    run = run_calculators(chosen, view, settings.strategy.alpha)[0]
    if run.history is not None and run.history.short:
        print(f"note: {run.history.note()}", file=sys.stderr)
    if not run.ok:
        print(f"{run.name} {run.status} after {run.seconds:.3f} s: {run.error}", file=sys.stderr)
        if run.traceback:
            print(run.traceback, file=sys.stderr)
        return 1
    print(f"ran in {run.seconds:.3f} s; {run.weights.height} weights ({run.dropped} dropped: non-finite or outside)")
    _print_weights(run.weights, args.top)
    return 0


def _print_weights(weights: pl.DataFrame, top: int) -> None:
    total = weights["weight"].abs().sum()
    scaled = weights.with_columns((pl.col("weight") / total if total else pl.lit(0.0)).alias("normalised"))
    longs = scaled.filter(pl.col("weight") > 0).sort("weight", descending=True).head(top)
    shorts = scaled.filter(pl.col("weight") < 0).sort("weight").head(top)
    print(f"long {int((weights['weight'] > 0).sum())}, short {int((weights['weight'] < 0).sum())}, Σ|w| = {total:.6g}")
    for title, part in (("longs", longs), ("shorts", shorts)):
        print(f"{title}:")
        for symbol, weight, normalised in part.iter_rows():
            print(f"  {symbol:<16} {weight:+.6g}  ({normalised:+.4%})")
