"""Dagster's PostgreSQL storage with a kept connection per storage: the counterpart of lsq_pipeline.storage for sqlite.

dagster-postgres opens a new server connection for every read and write (SQLAlchemy's NullPool), except in the
webserver, which calls `optimize_for_webserver` to keep one open per storage. A run process records ~80 events between
its window's end and its target positions, each then paying for a connection and its authentication: on this machine
a PostgreSQL window run took 3.5 s from start to finish against sqlite's 1.6 s (benchmarks/run_start_latency.py).
`PooledPostgresStorage` (dagster.yaml's `storage: custom`, with the `postgres:` section's own fields as its config)
is the same storage, tables and rows, with the engine dagster-postgres gives the webserver in every process: a pool
of one AUTOCOMMIT connection per storage (MAX_OVERFLOW more for threads at the same moment, closed when returned),
recycled after POOL_RECYCLE_S. Unlike the webserver's, it is pinged before each use (a server restart, failover or
idle kill then costs a reconnect, not a failed write and a failed run) and it sets no statement timeout of its own, so
the server's, the role's or the URL's `options` stay in force. A forked child (the warm worker forks every run) never
uses its parent's connection: its pools are emptied at the fork and it connects afresh (SQLAlchemy's rule for pools
and os.fork). Its event log also writes a check's planned rows with their event serialised once
(storage.PlannedChecksSerialisedOnce) and remembers the tables it has seen (Dagster asks before every tagged
materialisation, on a second connection).
"""

from __future__ import annotations

import os
import weakref
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
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

from lsq_pipeline.storage import KnownTables, PlannedChecksSerialisedOnce

POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 8


def forget_in_forked_children(engine: db.engine.Engine) -> None:
    """A forked child starts with an empty pool: the inherited connections are dropped without being closed
    (Engine.dispose(close=False), SQLAlchemy's rule for os.fork), so the child opens its own and the parent's stays
    usable. At the fork, not at checkout: the pre-ping runs before any checkout hook and would already talk on the
    parent's socket."""
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        kept = ref()
        if kept is not None:
            kept.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)


class KeptEngine:
    """For a dagster-postgres storage: its engine replaced by one that keeps a pinged, fork-safe connection (module
    docstring), closed by `dispose`."""

    postgres_url: str
    _token_provider: PgTokenProvider | None
    _engine: db.engine.Engine

    def keep_engine(self) -> None:
        kwargs: dict[str, Any] = {
            "isolation_level": "AUTOCOMMIT",
            "pool_size": 1,
            "max_overflow": MAX_OVERFLOW,
            "pool_recycle": POOL_RECYCLE_S,
            "pool_pre_ping": True,
        }
        options = self._engine.url.query.get("options")
        if options:
            kwargs["connect_args"] = {"options": options}
        self._engine.dispose()
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, **kwargs)
        forget_in_forked_children(self._engine)

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        """The webserver's own engine (with its statement timeout for UI queries), the kept one closed first."""
        self._engine.dispose()
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]
        forget_in_forked_children(self._engine)

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()  # in a forked child, only its own connections: the fork emptied the pool


class PooledPostgresRunStorage(KeptEngine, PostgresRunStorage):
    """PostgresRunStorage on a kept connection."""


class PooledPostgresScheduleStorage(KeptEngine, PostgresScheduleStorage):
    """PostgresScheduleStorage on a kept connection."""


class PooledPostgresEventLogStorage(KeptEngine, KnownTables, PlannedChecksSerialisedOnce, PostgresEventLogStorage):
    """PostgresEventLogStorage on a kept connection, with lsq_pipeline.storage's known tables and planned rows."""


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
        self._run_storage = PooledPostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = PooledPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PooledPostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        super(DagsterPostgresStorage, self).__init__()  # DagsterStorage's; the parent's would open its own storages
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage.keep_engine()

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
