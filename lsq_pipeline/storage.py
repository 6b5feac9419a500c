"""Dagster's sqlite instance storage with each database's engine kept open, and range runs' events in batches.

Dagster's sqlite run and event log storages build a new SQLAlchemy engine for every read and write (a new sqlite
connection, the dialect's first-connect queries) and dispose of it afterwards: on an idle core here a log event costs
3.5 ms and a materialisation 9 ms, under load 20-50 ms, and a window run stores ~100 events on the way from its window's
end to its target positions (benchmarks/event_writes.py). `PooledSqliteStorage` (dagster.yaml's `storage: custom`) is
the same storage, the same files and rows, with one engine per database file kept for the life of the process:
0.6 ms and 2.5 ms. Kept safe by two rules:
- a forked child (the warm run worker forks every run) never touches its parent's connections: the cache notices the
  new pid and starts afresh, dropping the inherited pool without closing it;
- the event log holds at most OPEN_DATABASES run databases open (the webserver reads many runs' logs), evicting the
  least recently used, always under the storage's own lock, so no connection is in use when its engine goes.
(SQLAlchemy's rule for pools and os.fork: the child calls `dispose(close=False)` on what it inherited.)

A single run over a partition range records one materialisation per partition and asset (8,640 a month of 5-minute
windows). Dagster groups them into batches when DAGSTER_EVENT_BATCH_SIZE is set and hands each batch to
`store_event_batch`; dagster-postgres writes a batch as one insert, but the sqlite storage stores it event by event,
two transactions per event. Here a batch of one run's materialisations (or observations) is one executemany and one
transaction per shard, each event serialised once for both, with the same rows the default writes and, like
dagster-postgres, the asset's latest-event entry updated once from the batch's last event. `lsq backfill` sets the
variable (`backfill_instance`). The same range run plans each check for every window, and Dagster serialises that
planned event once per window: `PlannedChecksSerialisedOnce` writes the same rows with one serialisation (it serves
the PostgreSQL storage too, lsq_pipeline.postgres_storage).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._config import StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqlEventLogStorage, SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
BATCH_SIZE = 1000  # events per transaction: a month's bars are ~9 batches per asset
OPEN_DATABASES = 8  # the index shard and the most recently used runs' event logs
_BATCHED = ({dg.DagsterEventType.ASSET_MATERIALIZATION}, {dg.DagsterEventType.ASSET_OBSERVATION})
_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage")


class EngineCache:
    """One engine per sqlite database of this process, least recently used evicted beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pid = os.getpid()
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def engine(self, conn_string: str) -> Engine:
        """The engine of `conn_string`, created on first use in this process."""
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's connections are not ours to use or close
                for inherited in self._engines.values():
                    inherited.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.pop(conn_string, None) or create_engine(
                conn_string, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            self._engines[conn_string] = engine
            while len(self._engines) > self._limit:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose(close=os.getpid() == self._pid)
            self._engines.clear()


class PooledSqliteRunStorage(SqliteRunStorage):
    """SqliteRunStorage over one kept engine (see the module docstring)."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._cache = EngineCache(limit=1)
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._cache.engine(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._cache.dispose()


class KnownTables(SqlEventLogStorage):
    """Remembers the tables that exist. Dagster asks before storing the indexed tags of every materialisation (each
    one a run records carries its data version), on a connection of its own: a new engine on sqlite, a second one on
    PostgreSQL. Only a table found is remembered: tables are only ever added, by migrations."""

    def has_table(self, table_name: str) -> bool:
        known: set[str] = self.__dict__.setdefault("_known_tables", set())
        if table_name not in known and super().has_table(table_name):  # type: ignore[safe-super]  # before a storage
            known.add(table_name)
        return table_name in known


class PlannedChecksSerialisedOnce(SqlEventLogStorage):
    """Dagster's rows for a check's planned evaluation (one per planned partition), with the event serialised once
    instead of once per partition: a month's range run plans 8,640 windows for each of the seven bar checks, 60,480
    serialisations of one event (~15 s of a 30-day backfill). For the sqlite and the PostgreSQL event logs alike."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.get_dagster_event().event_specific_data
        assert isinstance(planned, AssetCheckEvaluationPlanned)
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        # one transaction: on PostgreSQL's AUTOCOMMIT connection an executemany commits page by page otherwise
        with self.index_transaction() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": key} for key in keys])


class PooledSqliteEventLogStorage(KnownTables, PlannedChecksSerialisedOnce, SqliteEventLogStorage):
    """SqliteEventLogStorage over kept engines, whose `store_event_batch` is one transaction per shard."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._cache = EngineCache(limit=OPEN_DATABASES)  # before the parent's __init__, which already connects
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]  # the parent's config type is a TypedDict of the same key
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, base_dir=config_value["base_dir"])

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._cache.engine(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        types = {e.get_dagster_event().event_type for e in events}
        runs = {e.run_id for e in events}
        if types not in _BATCHED or len(runs) != 1:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in events]  # each event serialised once, for both shards
        with self.run_connection(runs.pop()) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            # One executemany (one compiled statement, not a statement with a bound parameter per value); its rows
            # get consecutive ids, as the transaction's first insert takes the database's write lock until commit.
            conn.execute(SqlEventLogStorageTable.insert(), rows)
            last = conn.execute(text("SELECT last_insert_rowid()")).scalar_one()
            ids = list(range(last - len(events) + 1, last + 1))
            self._store_asset_event_tags(conn, events, ids)
            self._store_asset_event(conn, events[-1], ids[-1])

    def dispose(self) -> None:
        super().dispose()
        self._cache.dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's sqlite storage (`storage: sqlite`) with the pooled run and event log storages; same files."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        history = os.path.join(base_dir, "history")
        self._run_storage = PooledSqliteRunStorage.from_local(os.path.join(history, ""))
        self._event_log_storage = PooledSqliteEventLogStorage(os.path.join(history, "runs", ""))
        self._schedule_storage = SqliteScheduleStorage.from_local(os.path.join(base_dir, "schedules"))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()  # DagsterStorage's; the parent's would open its own storages

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(  # type: ignore[override]  # the parent's config type is a TypedDict of the same key
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledSqliteStorage:
        os.makedirs(config_value["base_dir"], exist_ok=True)
        return cls(config_value["base_dir"], inst_data=inst_data)


def pooled_storage_config(base_dir: str | Path) -> dict[str, Any]:
    """The `storage:` section of a dagster.yaml for PooledSqliteStorage under `base_dir`."""
    pooled = {"module": __name__, "class": PooledSqliteStorage.__name__, "config": {"base_dir": str(base_dir)}}
    return {"custom": pooled}


def backfill_instance(home: Path) -> dg.DagsterInstance:
    """The instance under `home`, with DAGSTER_EVENT_BATCH_SIZE set (unless the operator set it), so range runs write
    their materialisations in batches. A home without a storage section (Dagster's default sqlite) gets the pooled
    storage on the same files; one that configures its own (ours, or PostgreSQL, which batches by itself) opens as
    configured."""
    os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))
    config_file = home / "dagster.yaml"
    config = (yaml.safe_load(config_file.read_text()) if config_file.exists() else None) or {}
    if any(key in config for key in _STORAGE_KEYS):
        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    overrides = {"storage": pooled_storage_config(home)}
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))
