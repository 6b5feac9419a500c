"""Monitoring costs (run: python benchmarks/bench_monitoring.py).

1. The account-state refresh for 2 accounts x 40 positions against the real simulator over loopback, both accounts
   concurrently as the watcher does: full (account, positionRisk, income, fills, store appends) and light (account,
   positionRisk, store appends: after stream events).
2. The strategy report over 30 days of scripted trading: a target file every 5 minutes (30 symbols), 10 fills per
   window, commissions and funding as income, and a snapshot a minute with 30 positions.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from factors.sizing import write_account_targets  # noqa: E402
from lsq.config import Endpoints, load_config  # noqa: E402
from lsq.exchange import async_rest_client  # noqa: E402
from lsq.paths import DataPaths  # noqa: E402
from lsq.targets import TargetPosition  # noqa: E402
from lsq.timelabels import DAY_MS, MINUTE_MS, WINDOW_MS  # noqa: E402
from monitoring.report import account_report  # noqa: E402
from monitoring.store import MONEY, AccountStore  # noqa: E402
from monitoring.targets import read_targets  # noqa: E402
from monitoring.watcher import AccountWatcher  # noqa: E402

SYMBOLS = 40


def bench_refresh(rounds: int = 20) -> None:
    from simulator.app import BackgroundServer, build_app
    from simulator.clock import Clock
    from simulator.faults import Faults
    from simulator.instruments import select_instruments
    from simulator.market import Market
    from simulator.ratelimit import RateLimits
    from simulator.trading import Exchange
    from simulator.trading.margin import ceil_to
    from simulator.user_stream import UserStreamHub

    base = load_config()
    accounts = base.execution.mock.accounts[:2]
    data = Path(tempfile.mkdtemp(prefix="lsq-bench-monitoring-"))
    clock, market = Clock(), Market(select_instruments(SYMBOLS), seed=3)
    faults = Faults(clock=clock)
    users = UserStreamHub(clock, faults)
    (data / "simulator").mkdir(parents=True)
    engine = Exchange(market, clock, data / "simulator", list(accounts), users.publish, fresh=True)
    limits = RateLimits().scaled(20)
    server = BackgroundServer(
        lambda: build_app(market, clock, faults, engine, limits, accounts=accounts, user_hub=users)
    ).start()
    try:
        for i, account in enumerate(accounts):
            for j, symbol in enumerate(market.instruments):
                inst = market.instrument(symbol)
                qty = ceil_to(Decimal(60) / market.mid_price(symbol, clock.now_ms()), inst.market_step_size)
                qty = max(qty, inst.market_min_qty)
                side = "BUY" if (i + j) % 2 else "SELL"
                params = {"symbol": symbol, "side": side, "type": "MARKET", "quantity": str(qty)}
                engine.place_order(account.account_id, params, clock.now_ms())
        endpoints = Endpoints(rest_url=server.rest_url, ws_url=server.ws_url, data_url=f"{server.rest_url}/data")
        settings = base.model_copy(
            update={
                "binance": base.binance.model_copy(update={"mock": endpoints}),
                "data": base.data.model_copy(update={"data_dir": data}),
            }
        )
        watchers = [AccountWatcher(settings, a) for a in accounts]

        async def run(full: bool) -> list[float]:
            clients = [await async_rest_client(settings, a) for a in accounts]
            pairs = list(zip(watchers, clients, strict=True))
            try:
                await asyncio.gather(*(w.refresh(c) for w, c in pairs))  # the first one backfills income
                took = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    results = await asyncio.gather(*(w.refresh(c, full=full) for w, c in pairs))
                    took.append(time.perf_counter() - start)
                    assert all(r.positions == SYMBOLS for r in results)
                return took
            finally:
                for c in clients:
                    await c.close_connection()

        for full in (True, False):
            took = asyncio.run(run(full))
            print(
                f"{'full' if full else 'light'} refresh, 2 accounts x {SYMBOLS} positions  {rounds:>4} rounds  "
                f"median {np.median(took) * 1e3:7.1f} ms  max {max(took) * 1e3:7.1f} ms"
            )
    finally:
        server.stop()
        engine.close()


def _scripted_month(paths: DataPaths, account_id: str, start: int, days: int) -> None:
    rng = np.random.default_rng(11)
    symbols = [f"S{i:02d}USDT" for i in range(30)]
    windows = np.arange(start, start + days * DAY_MS, WINDOW_MS)
    base_price = rng.uniform(1, 1000, len(symbols))
    for w in windows:
        positions = [
            TargetPosition(s, Decimal(int(q)) / 10, Decimal(int(q)) / 10 * Decimal(f"{p:.2f}"), Decimal(f"{p:.2f}"))
            for s, q, p in zip(symbols, rng.integers(-50, 50, len(symbols)), base_price, strict=True)
        ]
        write_account_targets(paths, account_id, int(w) - WINDOW_MS, Decimal(100_000), positions)
    n = len(windows) * 10
    fill_time = np.repeat(windows, 10) + rng.integers(1_000, 120_000, n)
    sym_idx = rng.integers(0, len(symbols), n)
    price = base_price[sym_idx] * (1 + rng.normal(0, 0.001, n))
    qty = rng.integers(1, 50, n) / 10
    fills = pl.DataFrame(
        {
            "trade_id": np.arange(n, dtype=np.int64) + 1,
            "time_ms": fill_time.astype(np.int64),
            "symbol": [symbols[i] for i in sym_idx],
            "order_id": np.arange(n, dtype=np.int64) + 1,
            "side": np.where(rng.random(n) < 0.5, "BUY", "SELL"),
            "position_side": "BOTH",
            "price": np.round(price, 4),
            "qty": qty,
            "quote_qty": np.round(price * qty, 6),
            "commission": np.round(price * qty * 0.0004, 8),
            "commission_asset": "USDT",
            "realized_pnl": np.round(rng.normal(0, 1, n), 8),
            "maker": False,
        }
    ).with_columns(pl.col("price", "qty", "quote_qty", "commission", "realized_pnl").cast(MONEY))
    funding_times = np.arange(start, start + days * DAY_MS, 8 * 3_600_000)
    m = len(funding_times) * len(symbols)
    commissions = fills.select(
        (pl.col("trade_id") * 2).alias("tran_id"),
        "time_ms",
        "symbol",
        pl.lit("COMMISSION").alias("income_type"),
        (-pl.col("commission")).alias("income"),
        pl.lit("USDT").alias("asset"),
        pl.lit("").alias("info"),
        pl.col("trade_id").cast(pl.String),
    )
    funding = pl.DataFrame(
        {
            "tran_id": np.arange(m, dtype=np.int64) + 10**9,
            "time_ms": np.repeat(funding_times, len(symbols)).astype(np.int64),
            "symbol": symbols * len(funding_times),
            "income_type": "FUNDING_FEE",
            "income": np.round(rng.normal(0, 0.5, m), 8),
            "asset": "USDT",
            "info": "",
            "trade_id": "",
        }
    ).with_columns(pl.col("income").cast(MONEY))
    minutes = np.arange(start, start + days * DAY_MS, MINUTE_MS, dtype=np.int64)
    snaps = (
        pl.DataFrame({"time_ms": minutes})
        .with_columns(
            pl.lit(Decimal(100_000)).cast(MONEY).alias(c)
            for c in (
                "wallet_balance",
                "unrealized_pnl",
                "equity",
                "available_balance",
                "initial_margin",
                "maint_margin",
            )
        )
        .with_columns(pl.lit(0.01).alias("margin_ratio"))
    )
    k = len(minutes) * len(symbols)
    pos = pl.DataFrame(
        {
            "time_ms": np.repeat(minutes, len(symbols)),
            "symbol": symbols * len(minutes),
            "position_side": "BOTH",
            "position_amt": np.round(rng.normal(0, 2, k), 1),
            "entry_price": np.tile(base_price, len(minutes)).round(2),
            "mark_price": np.tile(base_price, len(minutes)).round(2),
            "notional": 0.0,
            "unrealized_pnl": np.round(rng.normal(0, 5, k), 4),
            "maint_margin": 0.0,
        }
    ).with_columns(pl.col(c).cast(MONEY) for c in ("position_amt", "entry_price", "mark_price", "notional",
                                                   "unrealized_pnl", "maint_margin"))  # fmt: skip
    store = AccountStore(paths, account_id)
    store.append("fills", fills)
    store.append("income", pl.concat([commissions, funding]))
    store.append("snapshots", snaps)
    store.append("positions", pos)


def bench_report(days: int = 30) -> None:
    paths = DataPaths(Path(tempfile.mkdtemp(prefix="lsq-bench-report-")))
    start = 1_798_761_600_000  # 2027-01-01
    made = time.perf_counter()
    _scripted_month(paths, "bench", start, days)
    made = time.perf_counter() - made
    end = start + days * DAY_MS
    # The first read of the target files builds their day index (monitoring/targets.py), later reads use it.
    for label in ("first (builds the target index)", "again (target index in place)"):
        took = time.perf_counter()
        report = account_report(paths, "bench", start, end)
        took = time.perf_counter() - took
        targets = time.perf_counter()
        read_targets(paths, "bench", start, end)
        targets = time.perf_counter() - targets
        print(
            f"report {days} days ({report.totals['fills']} fills, {report.window_deviation.height} windows) {label}"
            f"  {took:7.2f} s, of which reading the targets ~{targets:.2f} s"
        )
    print(f"(scripting the data took {made:.1f} s)")


if __name__ == "__main__":
    bench_refresh()
    bench_report()
