"""The simulator's trading engine: accounts, orders, fills, positions, PnL, funding, persistence, signed endpoints."""

from simulator.trading.endpoints import trading_endpoints
from simulator.trading.engine import Exchange

__all__ = ["Exchange", "trading_endpoints"]
