"""The market domain's asset keys and the run's time range, shared by its assets, the bar checks they run and the
claims (lsq_pipeline.defs.market.claims) that the seal wait of every window asset reads."""

import dagster as dg

from lsq.timelabels import from_datetime

AGG_TRADES = dg.AssetKey("agg_trades")
BARS_5M = dg.AssetKey("bars_5m")
TRAN_STATS_5M = dg.AssetKey("tran_stats_5m")
PREMIUM_INDEX_5M = dg.AssetKey("premium_index_5m")
FUNDING_RATES = dg.AssetKey("funding_rates")
# The group of the market assets computed for every sealed window (lsq_pipeline.defs.market.jobs.window_job).
WINDOW_GROUP = "bars_5m"


def time_range(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[int, int]:
    """[start, end) ms of the run's partition or partition range."""
    window = context.partition_time_window
    return from_datetime(window.start), from_datetime(window.end)
