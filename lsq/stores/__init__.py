"""What the system stores, and how it is read and written: panels (bars, trade statistics, premium index, funding
per UTC day) and universes (per day and version). Every stage reads through here, never through the Dagster package.
The trade store (lsq.tradestore) belongs here too and moves when its collector work settles."""
