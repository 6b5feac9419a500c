"""The aggTrade collector daemon (`lsq collect`) and history import/backfill of trades."""
