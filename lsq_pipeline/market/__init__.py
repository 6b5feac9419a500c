"""Market-data assets: trades seen by the collector, 5-minute bars and trade statistics, their rollups, premium index
and funding rates."""
