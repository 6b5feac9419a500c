"""lsq_pipeline: the Dagster code location of LSQ (see lsq_pipeline/README.md)."""
