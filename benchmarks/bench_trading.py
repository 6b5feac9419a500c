"""Throughput of the trading engine on the real market model (run: python benchmarks/bench_trading.py).

Prints per-operation latency of market orders, resting limit orders, on_tick, the account views and a restart
from the SQLite state.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from lsq.config import load_config
from simulator.clock import Clock
from simulator.instruments import select_instruments
from simulator.market import Market
from simulator.trading.endpoints import account_body
from simulator.trading.engine import Exchange
from simulator.trading.margin import ceil_to


def _timed(label: str, n: int, fn: Callable[[int], object]) -> None:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n:>6}  {elapsed / n * 1e3:8.3f} ms/op  {n / elapsed:9.0f} op/s")


def main() -> None:
    accounts = load_config().execution.mock.accounts
    account_id = accounts[0].account_id
    clock = Clock()
    market = Market(select_instruments(30), seed=1)
    state = Path(tempfile.mkdtemp(prefix="lsq-bench-trading-"))
    engine = Exchange(market, clock, state, accounts, lambda a, e: None, fresh=True)
    symbols = list(market.instruments)[:10]

    def market_order(i: int) -> None:
        symbol = symbols[i % len(symbols)]
        inst = market.instrument(symbol)
        qty = max(
            inst.market_min_qty, ceil_to(Decimal(20) / market.mid_price(symbol, clock.now_ms()), inst.market_step_size)
        )
        side = "BUY" if i % 2 else "SELL"
        engine.place_order(
            account_id, {"symbol": symbol, "side": side, "type": "MARKET", "quantity": str(qty)}, clock.now_ms()
        )

    def resting_order(i: int) -> None:
        price = (market.mid_price("BTCUSDT", clock.now_ms()) * Decimal("0.9")).quantize(Decimal("0.01"))
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001"}
        engine.place_order(account_id, {**params, "price": str(price)}, clock.now_ms())

    _timed("market order (10 symbols held)", 1000, market_order)
    _timed("resting limit order (up to 150 open)", 150, resting_order)
    _timed("on_tick (2 accounts, 150 resting orders)", 200, lambda i: engine.on_tick(clock.now_ms()))
    _timed("GET /fapi/v2/account body (30 symbols)", 100, lambda i: account_body(engine, account_id, clock.now_ms(), 2))
    _timed("GET /fapi/v3/account body", 200, lambda i: account_body(engine, account_id, clock.now_ms(), 3))
    engine.close()
    start = time.perf_counter()
    again = Exchange(market, clock, state, accounts, lambda a, e: None)
    trades = sum(len(t) for t in again.trades.values())
    print(f"restart with {len(again.orders)} orders, {trades} trades: {time.perf_counter() - start:.3f} s")
    again.close()


if __name__ == "__main__":
    main()
