"""Dagster's run tags we read and write, as the literal strings Dagster documents (its constants live in private
modules, which product code does not import)."""

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Ours: every run of `lsq backfill` carries it (the rollup automation leaves periods it backfilled to it).
BACKFILL_TAG = "lsq/backfill"
# Ours: a window run `lsq trigger` launched before its window closed; its window assets wait for the seal
# (lsq_pipeline.defs.market.seal).
AWAIT_SEAL_TAG = {"lsq/await_seal": "true"}


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Tags of one run over the partition range [first_key, last_key] (both inclusive)."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


# Run retries (dagster.yaml run_retries) per job or run: "0" turns them off.
MAX_RETRIES_TAG = "dagster/max_retries"
