"""Aggregation maths: 5-minute bars and tran_stats from aggTrades, their completion and rollups (pure Polars).

Input trades carry lsq.schema.TRADE_SCHEMA columns plus `symbol`; outputs are DataFrames sorted by symbol, open_time.
"""

from lsq.aggregation.bars import BAR_SCHEMA, NO_TRADE, TRADED, aggregate_bars, complete_bars
from lsq.aggregation.rollups import ROLLUP_PERIODS, rollup_bars, rollup_tran_stats
from lsq.aggregation.schemas import (
    AggregationSchemaError,
    BarSchema,
    TranStatsSchema,
    validate_bars,
    validate_tran_stats,
)
from lsq.aggregation.tran_stats import (
    TRAN_STATS_SCHEMA,
    aggregate_tran_stats,
    aggregate_window_stats,
    complete_tran_stats,
)

__all__ = [
    "BAR_SCHEMA",
    "NO_TRADE",
    "ROLLUP_PERIODS",
    "TRADED",
    "TRAN_STATS_SCHEMA",
    "AggregationSchemaError",
    "BarSchema",
    "TranStatsSchema",
    "aggregate_bars",
    "aggregate_tran_stats",
    "aggregate_window_stats",
    "complete_bars",
    "complete_tran_stats",
    "rollup_bars",
    "rollup_tran_stats",
    "validate_bars",
    "validate_tran_stats",
]
