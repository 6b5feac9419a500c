"""The code location's definitions, one package per domain (as Dagster's reference projects lay them out): each
keeps its assets, checks, jobs, schedules and sensors together and exposes `defs(settings) -> dg.Definitions`;
lsq_pipeline.definitions merges them. Execution and monitoring join as `defs/execution/` and `defs/monitoring/`."""
