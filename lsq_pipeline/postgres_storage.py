"""Dagster's PostgreSQL storage with a kept connection per storage: the counterpart of lsq_pipeline.storage for sqlite.

dagster-postgres opens a new server connection for every read and write (SQLAlchemy's NullPool), except in the
webserver, which calls `optimize_for_webserver` to keep one open per storage. A run process records ~80 events between
its window's end and its target positions, each then paying for a connection and its authentication: on this machine
a PostgreSQL window run took 3.5 s from start to finish against sqlite's 1.6 s (benchmarks/run_start_latency.py).
`PooledPostgresStorage` (dagster.yaml's `storage: custom`, with the `postgres:` section's own fields as its config)
is the same storage, tables and rows, set up in every process as dagster-postgres sets up the webserver: a pool of one
connection per storage (MAX_OVERFLOW more for threads at the same moment, closed when returned), recycled after
POOL_RECYCLE_S, no statement timeout. A forked child (the warm worker forks every run) never uses its parent's
connection: the pool notices the new pid and connects afresh (SQLAlchemy's rule for pools and os.fork). Its event
log also writes a check's planned rows with their event serialised once (storage.PlannedChecksSerialisedOnce).
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as db
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.auth import PgTokenProvider
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from lsq_pipeline.storage import PlannedChecksSerialisedOnce

POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 8
NO_STATEMENT_TIMEOUT = 0


def forget_connections_of_other_processes(engine: db.engine.Engine) -> None:
    """Connections are tagged with the pid that opened them; one checked out in another process (a forked child) is
    dropped without being closed, so the child opens its own and the parent's stays usable."""

    @db.event.listens_for(engine, "connect")
    def _tag(dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @db.event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise db.exc.DisconnectionError(f"connection opened by pid {record.info.get('pid')}, not {os.getpid()}")


class PooledPostgresEventLogStorage(PlannedChecksSerialisedOnce, PostgresEventLogStorage):
    """PostgresEventLogStorage whose checks' planned rows serialise their event once (lsq_pipeline.storage)."""


class PooledPostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage whose run, event log and schedule storages keep their connection (module docstring)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: PgTokenProvider | None = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._event_log_storage = PooledPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        super(DagsterPostgresStorage, self).__init__()  # DagsterStorage's; the parent's would open its own storages
        # the webserver calls each storage's optimize_for_webserver again with its own settings (it never forks)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_S, MAX_OVERFLOW)
            forget_connections_of_other_processes(storage._engine)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pg_config()

    @classmethod
    def from_config_value(  # type: ignore[override]  # the parent's config type is a TypedDict of the same keys
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


def pooled_postgres_config(postgres: dict[str, Any]) -> dict[str, Any]:
    """The `storage:` section of a dagster.yaml for PooledPostgresStorage, from a `storage: postgres:` section's body
    (`postgres_db: {...}` or `postgres_url: ...`)."""
    pooled = {"module": __name__, "class": PooledPostgresStorage.__name__, "config": postgres}
    return {"custom": pooled}
