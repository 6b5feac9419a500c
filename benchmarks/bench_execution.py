"""Planning cost of execution: 300 symbols x 2 accounts (run: python benchmarks/bench_execution.py).

Per account: universe rule, pre-trade limits, hedge/one-way legs, no-trade band, the first slice's orders and the
split by max order notional, plus the TWAP schedule; then the 7 further slices' catch-up planning. Pure functions
only: what the executor spends between reading positions and sending the first order.
"""

from __future__ import annotations

import random
import statistics
import time
from decimal import Decimal

from executors import planner as p
from executors.schedules import twap_schedule
from lsq.exchange.rules import SymbolRules

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


if __name__ == "__main__":
    main()
