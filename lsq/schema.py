"""Column types of stored trades.

Prices and quantities are Decimal(38, 8): Binance prints at most 8 decimals, so every value is exact, sums of
quantities are exact, and products price x quantity are computed at scale 16 (see lsq.aggregation) so that quote
volumes are exact too. Times are Int64 milliseconds, UTC.
"""

from __future__ import annotations

import polars as pl

PRICE = pl.Decimal(38, 8)
QTY = pl.Decimal(38, 8)

TRADE_SCHEMA: dict[str, pl.DataType] = {
    "agg_trade_id": pl.Int64(),
    "price": PRICE,
    "quantity": QTY,
    "first_trade_id": pl.Int64(),
    "last_trade_id": pl.Int64(),
    "transact_time": pl.Int64(),
    "is_buyer_maker": pl.Boolean(),
}
