"""Alpha engine benchmark: 20 calculators, 300 symbols, 30 days of 5-minute bars (synthetic, seeded).

Prints the view load (wall time and peak RSS, each in a fresh process): from the parquet day files as before, and
through the rolling panel (lsq.stores.factor_panel) when it is built, mapped, a day behind, and rolled; then the
compute time of run_alpha for each concurrency mode on both views (median of --repeat runs), and that their alphas
are identical.

    .venv/bin/python benchmarks/bench_alpha.py [--symbols 300] [--days 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import polars as pl

from benchmarks.timing import wall_runs
from factors.calculator import AlphaCalculatorBase
from factors.calculators.funding_carry import FundingCarry
from factors.calculators.mean_buy_dolvol4_over_dolvol_rank import MeanBuyDolvolShareRank
from factors.calculators.momentum_24h import Momentum
from factors.calculators.testnet_volume_rank import QuoteVolumeRank
from factors.data_view import PANELS, AlphaDataView
from factors.engine import run_alpha
from factors.synthetic import make_panels
from lsq.config import AlphaSettings, StrategySettings
from lsq.paths import DataPaths
from lsq.stores.factor_panel import read_direct, roll_base
from lsq.stores.panels import write_panel
from lsq.timelabels import DAY_MS, WINDOW_MS, parse_label


def twenty_calculators() -> list[AlphaCalculatorBase]:
    """The shipped factors' classes with 20 parameter sets: 8 tier shares, 6 momenta, 3 volume ranks, 3 carries."""
    return [
        *(MeanBuyDolvolShareRank(tier, rows) for tier in (1, 2, 3, 4) for rows in (288, 1_000)),
        *(Momentum(h) for h in (1, 4, 8, 12, 24, 72)),
        *(QuoteVolumeRank(w) for w in (12, 288, 2_016)),
        *(FundingCarry(h) for h in (24, 72, 168)),
    ]


def load_once(folder: Path, window: int, days: int, how: str) -> dict[str, float]:
    """One view load in this process: wall and CPU seconds (all threads), peak RSS (VmHWM) and rows.

    `how`: direct (parquet, the path before the rolling panel), panel (lsq.stores.factor_panel, in whatever state
    it is) or roll (the base brought up to date for the window's day, as factor_view_schedule's run does; rows are
    then the base's)."""
    paths = DataPaths(folder)
    cpu = time.process_time()
    started = time.perf_counter()
    if how == "roll":
        end = window + WINDOW_MS
        rows = float(roll_base(paths, end - days * DAY_MS, end)["rows"]["tran_stats"])
    else:
        view = parquet_view(paths, window, days) if how == "direct" else panel_view(paths, window, days)
        rows = float(view.tran_stats_panel.height)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb(), "rows": rows}


def panel_view(paths: DataPaths, window: int, days: int) -> AlphaDataView:
    return AlphaDataView.from_storage(paths, window, days, universe_version=None)


def parquet_view(paths: DataPaths, window: int, days: int) -> AlphaDataView:
    """The view straight from the parquet day files, as it was built before the rolling panel."""
    end = window + WINDOW_MS
    frames = [read_direct(paths, kind, end - days * DAY_MS, end) for kind in PANELS]
    return AlphaDataView(window, *frames, history_days=days, _prepared=True)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_in_child(folder: Path, window: int, days: int, how: str) -> dict[str, float]:
    """`load_once` in a fresh interpreter, so its peak RSS is the view's alone (plus Python and Polars)."""
    args = ["--load-only", str(folder), "--window", str(window), "--days", str(days), "--how", how]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_alpha", *args],
        cwd=Path(__file__).resolve().parents[1],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


def from_scratch(
    paths: DataPaths, window: int, days: int, previous: int | None, how: str = "panel"
) -> dict[str, float]:
    """A child's panel load (or roll) after the panel is deleted and, with `previous`, built for that window first."""
    shutil.rmtree(paths.factor_view, ignore_errors=True)
    if previous is not None:
        load_once(paths.root, previous, days, "panel")
    return load_in_child(paths.root, window, days, how)


def report(what: str, runs: list[dict[str, float]]) -> None:
    times = [r["seconds"] for r in runs]
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    print(
        f"{what}: median {statistics.median(times):.3f} s (min {min(times):.3f}; CPU {cpu:.3f} s), peak RSS "
        f"{max(r['peak_rss_mb'] for r in runs):,.0f} MB, {int(runs[0]['rows']):,} tran_stats rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--how", choices=("direct", "panel", "roll"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only is not None:
        print(json.dumps(load_once(args.load_only, args.window, args.days, args.how)))
        return

    window = parse_label("2026-11-20-288")
    t = time.perf_counter()
    panels = make_panels(args.symbols, args.days, window)
    print(
        f"synthetic data: {panels.bars.height:,} bar rows, {panels.tran_stats.height:,} tran_stats rows "
        f"({time.perf_counter() - t:.2f} s to generate)"
    )

    start, end = window + WINDOW_MS - args.days * DAY_MS, window + WINDOW_MS
    with tempfile.TemporaryDirectory() as tmp:
        paths = DataPaths(Path(tmp))
        lo = start - start % DAY_MS
        for kind in PANELS:
            write_panel(paths, kind, getattr(panels, kind), lo, end)
        del panels
        folder, repeat = paths.root, range(args.repeat)
        print(f"view load in a fresh process each ({args.repeat} runs; the current day is a whole day of windows):")
        report(
            "  parquet, as before the rolling panel",
            [load_in_child(folder, window, args.days, "direct") for _ in repeat],
        )
        report(
            "  rolling panel, built from parquet (first run)",
            [from_scratch(paths, window, args.days, None) for _ in repeat],
        )
        report(
            "  rolling panel, mapped (every window run)",
            [load_in_child(folder, window, args.days, "panel") for _ in repeat],
        )
        report(
            "  rolling panel, the base a day behind (before factor_view_schedule's roll: two days from parquet)",
            [from_scratch(paths, window, args.days, window - DAY_MS) for _ in repeat],
        )
        report(
            "  the daily roll (factor_view_schedule's run: the base rewritten with one more day)",
            [from_scratch(paths, window, args.days, window - DAY_MS, "roll") for _ in repeat],
        )
        view_of_panel = panel_view(paths, window, args.days)
        calculators = twenty_calculators()
        alphas: dict[str, pl.DataFrame] = {}
        for name, view in (
            ("parquet view", parquet_view(paths, window, args.days)),
            ("rolling-panel view", view_of_panel),
        ):
            alpha: pl.DataFrame | None = None
            for mode in ("none", "thread", "process"):
                settings = StrategySettings(alpha=AlphaSettings(concurrency=mode, timeout_seconds=120))
                times, result = wall_runs(partial(run_alpha, calculators, view, settings), args.repeat)
                assert not result.failures, result.failures
                alpha = result.alpha if alpha is None else alpha
                same = "identical" if result.alpha.equals(alpha) else "DIFFERENT"
                slowest = max(result.timings.items(), key=lambda kv: kv[1])
                print(
                    f"{name} {mode:>7}: compute median {statistics.median(times):.3f} s (min {min(times):.3f}) for "
                    f"{len(calculators)} calculators x {len(view.universe)} symbols; slowest {slowest[0]} "
                    f"{slowest[1]:.3f} s; alpha {same}, {result.alpha.height} symbols"
                )
            assert alpha is not None
            alphas[name] = alpha
        agree = alphas["parquet view"].equals(alphas["rolling-panel view"])
        print(f"alpha of the rolling-panel view vs the parquet view: {'identical' if agree else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
