"""Order execution toward target positions (MARKET, TWAP, VWAP): planner, schedules, router, journal and the
per-account run (`executors.run.run_account`) that `lsq execute` and the Dagster run both call."""
