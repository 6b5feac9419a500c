"""Alpha engine benchmark: 20 calculators, 300 symbols, 30 days of 5-minute bars (synthetic, seeded).

Prints, for each concurrency mode, the data load time (day files in the pipeline's storage layout -> long panels),
the view build time and the compute time of run_alpha (median of --repeat runs).

    .venv/bin/python benchmarks/bench_alpha.py [--symbols 300] [--days 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks.timing import wall_runs
from factors.calculator import AlphaCalculatorBase
from factors.calculators.funding_carry import FundingCarry
from factors.calculators.mean_buy_dolvol4_over_dolvol_rank import MeanBuyDolvolShareRank
from factors.calculators.momentum_24h import Momentum
from factors.calculators.testnet_volume_rank import QuoteVolumeRank
from factors.data_view import AlphaDataView
from factors.engine import run_alpha
from factors.synthetic import make_panels
from lsq.config import AlphaSettings, StrategySettings
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel, write_panel
from lsq.timelabels import DAY_MS, WINDOW_MS, parse_label


def twenty_calculators() -> list[AlphaCalculatorBase]:
    """The shipped factors' classes with 20 parameter sets: 8 tier shares, 6 momenta, 3 volume ranks, 3 carries."""
    return [
        *(MeanBuyDolvolShareRank(tier, rows) for tier in (1, 2, 3, 4) for rows in (288, 1_000)),
        *(Momentum(h) for h in (1, 4, 8, 12, 24, 72)),
        *(QuoteVolumeRank(w) for w in (12, 288, 2_016)),
        *(FundingCarry(h) for h in (24, 72, 168)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

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
        for kind, frame in (
            ("bars", panels.bars),
            ("tran_stats", panels.tran_stats),
            ("premium_index", panels.premium_index),
        ):
            write_panel(paths, kind, frame, lo, end)
        write_panel(paths, "funding", panels.funding, lo, end)
        load_times, view = wall_runs(
            lambda: AlphaDataView.from_storage(paths, window, args.days, universe_version=None), args.repeat
        )
        t = time.perf_counter()
        sorted_load = {k: load_panel(k, start, end, paths=paths) for k in ("bars", "tran_stats", "premium_index")}
        sorted_load["funding"] = load_panel("funding", start, end, paths=paths)
        load_panel_s = time.perf_counter() - t
    t = time.perf_counter()
    AlphaDataView(
        window,
        sorted_load["bars"],
        sorted_load["tran_stats"],
        sorted_load["premium_index"],
        sorted_load["funding"],
        history_days=args.days,
    )
    view_s = time.perf_counter() - t
    print(
        f"view from parquet day files (AlphaDataView.from_storage): median {statistics.median(load_times):.3f} s; "
        f"for comparison lsq.stores.panels.load_panel (sorted) {load_panel_s:.3f} s + view build {view_s:.3f} s"
    )

    calculators = twenty_calculators()
    reference = None
    for mode in ("none", "thread", "process"):
        settings = StrategySettings(alpha=AlphaSettings(concurrency=mode, timeout_seconds=120))
        times, result = wall_runs(partial(run_alpha, calculators, view, settings), args.repeat)
        assert not result.failures, result.failures
        reference = result.alpha if reference is None else reference
        same = "identical" if result.alpha.equals(reference) else "DIFFERENT"
        slowest = max(result.timings.items(), key=lambda kv: kv[1])
        print(
            f"{mode:>7}: compute median {statistics.median(times):.3f} s (min {min(times):.3f}) for "
            f"{len(calculators)} calculators x {len(view.universe)} symbols; slowest {slowest[0]} "
            f"{slowest[1]:.3f} s; alpha {same}, {result.alpha.height} symbols"
        )


if __name__ == "__main__":
    main()
