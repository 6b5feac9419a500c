"""Speed of the simulated market: generating symbol-days, and what the server derives from them.

    .venv/bin/python benchmarks/bench_market.py [--symbols 40] [--days 3] [--seed 7]

Prints, per symbol-day generated cold (fresh Market, nothing cached): ms and aggTrades/s generated; then the cost
of a 24 h ticker for every symbol, 1500 1m klines, one aggTrades page, and one bulk aggTrades zip.
"""

from __future__ import annotations

import argparse
import statistics
import time

from lsq.timelabels import DAY_MS, HOUR_MS, parse_day
from simulator.history_files import aggtrades_day_zip
from simulator.instruments import select_instruments
from simulator.market import Market


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    first_day = parse_day("2026-06-01")
    market = Market(select_instruments(args.symbols), seed=args.seed)
    symbols = list(market.instruments)
    for symbol in symbols:  # the per-symbol daily layer is built once; time the day generation itself
        market._model(symbol)
        market._id_bases(symbol)
    per_day: list[tuple[str, float, int]] = []
    for day in range(args.days):
        for symbol in symbols:
            start = time.perf_counter()
            block = market._day_block(symbol, first_day + day * DAY_MS)
            per_day.append((symbol, time.perf_counter() - start, len(block)))
    seconds = [s for _, s, _ in per_day]
    trades = sum(n for *_, n in per_day)
    busiest = max(per_day, key=lambda r: r[2])
    print(f"symbol-days generated:      {len(per_day)} ({args.symbols} symbols x {args.days} days)")
    print(f"ms per symbol-day:          median {statistics.median(seconds) * 1e3:.1f}, max {max(seconds) * 1e3:.1f}")
    print(f"busiest symbol-day:         {busiest[0]} {busiest[2]:,} aggTrades in {busiest[1] * 1e3:.1f} ms")
    print(f"aggTrades generated per s:  {trades / sum(seconds):,.0f} (mean {trades / len(per_day):,.0f} per day)")

    now = first_day + args.days * DAY_MS - 1
    start = time.perf_counter()
    for symbol in symbols:
        market.ticker_24h(symbol, now)
    print(f"24h ticker, all symbols:    {(time.perf_counter() - start) * 1e3:.1f} ms (days already generated)")
    start = time.perf_counter()
    market.klines("BTCUSDT", "1m", None, None, 1500, now_ms=now)
    print(f"1500 1m klines (BTCUSDT):   {(time.perf_counter() - start) * 1e3:.1f} ms")
    start = time.perf_counter()
    market.trades(symbols[0], now - HOUR_MS, now)[:1000].to_rest_rows()
    print(f"aggTrades page of 1000:     {(time.perf_counter() - start) * 1e3:.1f} ms")
    start = time.perf_counter()
    data = aggtrades_day_zip(market, "BTCUSDT", "2026-06-01", now_ms=now)
    print(f"bulk aggTrades zip BTCUSDT: {(time.perf_counter() - start) * 1e3:.0f} ms, {len(data) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
