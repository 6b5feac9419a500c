"""The simulated market: deterministic aggTrades for any symbol and time, and everything derived from them.

- `blocks`: `TradeBlock` (aggTrades as numpy arrays on integer tick/step grids) and exact per-minute summaries.
- `base`: `MarketLike` (what the server and the engine use) and `MarketBase` (klines, tickers, premium index and
  funding computed from any trade source).
- `generated`: `Market`, the seeded generator; `simulator.replay.ReplayMarket` is the other trade source.

Prices are integer ticks and quantities integer steps throughout, so every aggregate (klines, tickers) is exact.
"""

from simulator.market.base import (
    FUNDING_CAP,
    INTEREST_PER_8H,
    KLINE_INTERVALS,
    PREMIUM_DECIMALS,
    MarketBase,
    MarketLike,
)
from simulator.market.blocks import MINUTES, NoTradesError, TradeBlock, UnknownSymbolError
from simulator.market.generated import GENESIS_MS, HORIZON_DAYS, Market

__all__ = [
    "FUNDING_CAP",
    "GENESIS_MS",
    "HORIZON_DAYS",
    "INTEREST_PER_8H",
    "KLINE_INTERVALS",
    "MINUTES",
    "PREMIUM_DECIMALS",
    "Market",
    "MarketBase",
    "MarketLike",
    "NoTradesError",
    "TradeBlock",
    "UnknownSymbolError",
]
