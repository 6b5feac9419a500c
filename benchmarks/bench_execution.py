"""Execution cost (run: python benchmarks/bench_execution.py).

1. Planning, 300 symbols x 2 accounts: universe rule, pre-trade limits, hedge/one-way legs, no-trade band, the first
   slice's orders and their split by max order notional, the TWAP schedule, then the 7 further slices' catch-up
   planning. Pure functions: what the executor spends between reading positions and sending orders.
2. One MARKET rebalance of 40 symbols against `lsq sim serve` in its own process: run start -> first order
   acknowledged (reconciliation, contract settings, limits and plan included) and -> complete, and a dry run.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from executors import planner as p
from executors.run import run_account
from executors.schedules import twap_schedule
from lsq.config import PROJECT_ROOT, load_config
from lsq.exchange import account_client
from lsq.exchange.rules import RulesProvider, SymbolRules
from lsq.paths import DataPaths
from lsq.targets import TargetPosition, write_targets
from lsq.timelabels import WINDOW_MS

SYMBOLS = 300
ACCOUNTS = 2
REPEATS = 20


def universe(rng: random.Random) -> tuple[dict[str, SymbolRules], dict[str, Decimal]]:
    rules, prices = {}, {}
    for i in range(SYMBOLS):
        name = f"S{i:03d}USDT"
        step = Decimal(10) ** -rng.randint(0, 3)
        rules[name] = SymbolRules(name, step, step, Decimal(5), market_step_size=step, tick_size=Decimal("0.0001"))
        prices[name] = Decimal(str(round(rng.uniform(0.05, 60_000), 4)))
    return rules, prices


def plan_account(
    rng: random.Random, rules: dict[str, SymbolRules], prices: dict[str, Decimal], dual: bool
) -> tuple[int, float]:
    equity = Decimal(100_000)
    names = list(rules)
    current = {(s, "BOTH"): rules[s].floor_qty(Decimal(rng.uniform(-800, 800)) / prices[s], False) for s in names}
    targets = {s: rules[s].floor_qty(Decimal(rng.uniform(-900, 900)) / prices[s], False) for s in names[:-20]}
    start = time.perf_counter()
    net, _ = p.universe_targets(targets, {s for s, _ in current}, rules)
    limited = p.apply_limits(net, p.net_of(current), prices, equity, rules, {},
                             p.Limits(Decimal(25_000), Decimal(3), Decimal("0.25"), 2))  # fmt: skip
    desired = p.leg_targets(limited.targets, dual)
    held = {(s, "LONG" if a > 0 else "SHORT"): a for (s, _), a in current.items()} if dual else current
    desired, _ = p.banded(desired, held, prices, Decimal(10))
    schedule = twap_schedule(0, 240, 30)
    orders, _ = p.plan_moves(held, {k: v / 8 for k, v in desired.items()}, rules, prices)
    pieces = [x for o in orders for x in p.split_order(o, rules[o.symbol], prices[o.symbol], Decimal(25_000))]
    for i in range(1, len(schedule)):
        cum = Decimal(str(schedule.cum("", i)))
        step = {k: held.get(k, Decimal(0)) + (v - held.get(k, Decimal(0))) * cum for k, v in desired.items()}
        p.plan_moves(held, step, rules, prices)
    return len(pieces), time.perf_counter() - start


def rebalance_on_the_simulator(symbols: int = 40) -> None:
    work = Path(tempfile.mkdtemp(prefix="lsq-bench-execution-"))
    env = {**os.environ, "LSQ_DATA_DIR": str(work / "sim"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0", "--fresh", "--symbols", str(symbols)]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"server did not start: {line!r}")
        rest = line.split()[3]
        base = load_config()
        endpoints = base.binance.mock.model_copy(update={"rest_url": rest, "ws_url": rest.replace("http", "ws")})
        settings = base.model_copy(
            update={
                "binance": base.binance.model_copy(update={"mock": endpoints}),
                "data": base.data.model_copy(update={"data_dir": work / "data"}),
            }
        )
        account = base.execution.mock.accounts[0].account_id
        client = account_client(settings, account)
        rules = RulesProvider(client).rules()
        marks = {m["symbol"]: Decimal(m["markPrice"]) for m in client.futures_mark_price()}
        rng = random.Random(3)
        rows = []
        for symbol in sorted(s for s in rules if s in marks and s.endswith("USDT") and rules[s].trading)[:symbols]:
            qty = rules[symbol].floor_qty(Decimal(rng.choice((-1, 1)) * 1500) / marks[symbol], market=False)
            rows.append(TargetPosition(symbol, qty, qty * marks[symbol], marks[symbol]))
        now = time.time_ns() // 1_000_000
        window = now - now % WINDOW_MS - WINDOW_MS
        target = write_targets(DataPaths(work / "data"), account, window, Decimal(100_000), rows)
        dry = run_account(settings, account, target, algorithm="market", dry_run=True)
        print(f"dry run, {len(rows)} symbols: plan in {(dry.finished_ms - dry.started_ms) / 1000:.2f} s, 0 orders sent")
        report = run_account(settings, account, target, algorithm="market")
        assert report.first_ack_ms is not None
        print(
            f"market rebalance, {len(rows)} symbols: first order acknowledged "
            f"{(report.first_ack_ms - report.started_ms) / 1000:.2f} s after the run started, complete in "
            f"{(report.finished_ms - report.started_ms) / 1000:.2f} s; {report.orders_sent} orders, "
            f"residual {report.residual_notional:.2f} USDT, slippage {report.slippage_bps:.2f} bps"
        )
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    rng = random.Random(1)
    rules, prices = universe(rng)
    for dual in (False, True):
        runs, orders = [], 0
        for _ in range(REPEATS):
            elapsed = 0.0
            for _ in range(ACCOUNTS):
                orders, seconds = plan_account(rng, rules, prices, dual)
                elapsed += seconds
            runs.append(elapsed)
        mode = "hedge" if dual else "one-way"
        print(
            f"plan {SYMBOLS} symbols x {ACCOUNTS} accounts ({mode}, 8 TWAP slices): median "
            f"{statistics.median(runs) * 1e3:.1f} ms, max {max(runs) * 1e3:.1f} ms "
            f"({orders} first-slice orders per account)"
        )
    rebalance_on_the_simulator()


if __name__ == "__main__":
    main()
