"""The market domain's asset keys, apart from the assets, for the modules the assets themselves use (the claims of
lsq_pipeline.defs.market.claims, which the seal wait of every window asset reads)."""

import dagster as dg

AGG_TRADES = dg.AssetKey("agg_trades")
BARS_5M = dg.AssetKey("bars_5m")
TRAN_STATS_5M = dg.AssetKey("tran_stats_5m")
PREMIUM_INDEX_5M = dg.AssetKey("premium_index_5m")
FUNDING_RATES = dg.AssetKey("funding_rates")
