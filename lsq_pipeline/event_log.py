"""Dagster's sqlite event log with batched writes, for `lsq backfill`'s partition-range runs.

A single run over a range records one materialisation per partition and asset (8,640 a month of 5-minute windows).
Dagster groups them into batches when DAGSTER_EVENT_BATCH_SIZE is set and hands each batch to
`store_event_batch`; dagster-postgres writes a batch as one insert, but the sqlite storage stores it event by event,
two transactions (run shard and index shard, each a new engine and a commit) per event: ~12 ms each on this machine,
most of a month's backfill. This storage writes a batch of materialisations (or observations) of one run in one
transaction per shard, with the same rows the default writes and, like dagster-postgres, the asset's latest-event
entry updated once from the batch's last event. Anything else goes to the default path unchanged.

It replaces the default event log only in the backfill's own instance (`backfill_instance`): the files are the same,
so the webserver and daemon read the backfill's events as any others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
BATCH_SIZE = 1000  # events per transaction: a month's bars are ~9 batches per asset
_BATCHED = ({dg.DagsterEventType.ASSET_MATERIALIZATION}, {dg.DagsterEventType.ASSET_OBSERVATION})
_STORAGE_KEYS = ("storage", "event_log_storage")


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` is one transaction per shard (see the module docstring)."""

    @classmethod
    def from_config_value(  # type: ignore[override]  # the parent's config type is a TypedDict of the same key
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> BatchingSqliteEventLogStorage:
        return cls(inst_data=inst_data, base_dir=config_value["base_dir"])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        types = {e.get_dagster_event().event_type for e in events}
        runs = {e.run_id for e in events}
        if types not in _BATCHED or len(runs) != 1:
            super().store_event_batch(events)
            return
        with self.run_connection(runs.pop()) as conn:
            conn.execute(self.prepare_insert_event_batch(events))
        with self.index_transaction() as conn:
            ids = [_inserted_id(conn.execute(self.prepare_insert_event(e))) for e in events]
            self._store_asset_event_tags(conn, events, ids)
            self._store_asset_event(conn, events[-1], ids[-1])


def _inserted_id(result: Any) -> int:
    """The row id of a single-row insert (SQLAlchemy types the key as optional; an insert always has one)."""
    return int(result.inserted_primary_key[0])


def backfill_instance(home: Path) -> dg.DagsterInstance:
    """The instance under `home`, with batched event writes when it keeps Dagster's default sqlite event log.

    A home whose dagster.yaml configures its own storage (PostgreSQL, which batches by itself) opens as configured.
    Either way DAGSTER_EVENT_BATCH_SIZE is set (unless the operator set it), so range runs write their
    materialisations in batches.
    """
    os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))
    config_file = home / "dagster.yaml"
    config = (yaml.safe_load(config_file.read_text()) if config_file.exists() else None) or {}
    if any(key in config for key in _STORAGE_KEYS):
        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    storage = {
        "module": __name__,
        "class": BatchingSqliteEventLogStorage.__name__,
        "config": {"base_dir": str(home / "history" / "runs")},
    }
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides={"event_log_storage": storage}))
