"""The per-account execution journal: every run, parent, child order, state change and fill, in SQLite under
data/execution/{account_id}/journal.sqlite (WAL, one transaction per write, so a SIGKILL loses nothing committed).

A child is written *before* its request is sent (status PENDING): a run killed between sending and hearing the
answer leaves a PENDING row, which the next run's reconciliation resolves by querying the order's client id.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from lsq.exchange.views import Fill, OpenOrder
from lsq.paths import DataPaths

UNRESOLVED = ("PENDING", "NEW", "PARTIALLY_FILLED", "UNKNOWN")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(run_id TEXT PRIMARY KEY, window_ms INT, target_file TEXT, algorithm TEXT,
    dry_run INT, started_ms INT, finished_ms INT, status TEXT, report TEXT);
CREATE TABLE IF NOT EXISTS parents(run_id TEXT, symbol TEXT, position_side TEXT, start_qty TEXT, target_qty TEXT,
    decision_price TEXT, PRIMARY KEY (run_id, symbol, position_side));
CREATE TABLE IF NOT EXISTS children(client_id TEXT PRIMARY KEY, run_id TEXT, window_ms INT, seq INT, symbol TEXT,
    position_side TEXT, leg TEXT, side TEXT, type TEXT, qty TEXT, price TEXT, reduce_only INT, status TEXT,
    order_id INT, executed_qty TEXT, avg_price TEXT, error TEXT, created_ms INT, updated_ms INT);
CREATE INDEX IF NOT EXISTS children_status ON children(status);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, ms INT, run_id TEXT, client_id TEXT,
    kind TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS fills(symbol TEXT, trade_id INT, order_id INT, client_id TEXT, side TEXT,
    position_side TEXT, price TEXT, qty TEXT, commission TEXT, commission_asset TEXT, realized_pnl TEXT, maker INT,
    time INT, PRIMARY KEY (symbol, trade_id));
"""


@dataclass(frozen=True)
class ChildRow:
    client_id: str
    run_id: str
    window_ms: int
    seq: int
    symbol: str
    position_side: str
    leg: str
    side: str
    type: str
    qty: Decimal
    price: Decimal | None
    reduce_only: bool
    status: str
    order_id: int | None
    executed_qty: Decimal
    avg_price: Decimal
    error: str | None
    created_ms: int
    updated_ms: int


def journal_path(paths: DataPaths, account_id: str) -> Path:
    return paths.execution(account_id) / "journal.sqlite"


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # runs and parents

    def start_run(self, run_id: str, window_ms: int, target_file: str, algorithm: str, dry_run: bool, ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,NULL,'running',NULL)",
                (run_id, window_ms, target_file, algorithm, int(dry_run), ms),
            )
            db.execute("INSERT INTO events(ms, run_id, kind, detail) VALUES (?,?,?,?)", (ms, run_id, "run", algorithm))

    def finish_run(self, run_id: str, status: str, report: dict[str, Any], ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_ms=?, status=?, report=? WHERE run_id=?",
                (ms, status, json.dumps(report, default=str), run_id),
            )

    def add_parents(self, run_id: str, rows: Sequence[tuple[str, str, Decimal, Decimal, Decimal]]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO parents VALUES (?,?,?,?,?,?)",
                [(run_id, s, ps, str(a), str(t), str(p)) for s, ps, a, t, p in rows],
            )

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT run_id, window_ms, algorithm, dry_run, started_ms, finished_ms, status FROM runs "
            "ORDER BY started_ms DESC LIMIT ?",
            (limit,),
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def next_seq(self, window_ms: int) -> int:
        """The first slice number no child of this window has used: ids of a re-run never repeat."""
        row = self._db.execute("SELECT MAX(seq) FROM children WHERE window_ms=?", (window_ms,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    # children

    def add_child(self, row: ChildRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO children VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.client_id, row.run_id, row.window_ms, row.seq, row.symbol, row.position_side, row.leg,
                    row.side, row.type, str(row.qty), None if row.price is None else str(row.price),
                    int(row.reduce_only), row.status, row.order_id, str(row.executed_qty), str(row.avg_price),
                    row.error, row.created_ms, row.updated_ms,
                ),
            )  # fmt: skip
            db.execute(
                "INSERT INTO events(ms, run_id, client_id, kind, detail) VALUES (?,?,?,?,?)",
                (row.created_ms, row.run_id, row.client_id, row.status, f"{row.side} {row.qty} {row.symbol}"),
            )

    def update_child(
        self, client_id: str, status: str, ms: int, *, order: OpenOrder | None = None, error: str | None = None
    ) -> None:
        with self._tx() as db:
            if order is not None:
                db.execute(
                    "UPDATE children SET status=?, order_id=?, executed_qty=?, avg_price=?, updated_ms=? "
                    "WHERE client_id=?",
                    (status, order.order_id, str(order.executed_qty), str(order.avg_price), ms, client_id),
                )
            else:
                db.execute(
                    "UPDATE children SET status=?, error=COALESCE(?, error), updated_ms=? WHERE client_id=?",
                    (status, error, ms, client_id),
                )
            db.execute(
                "INSERT INTO events(ms, client_id, kind, detail) VALUES (?,?,?,?)", (ms, client_id, status, error)
            )

    def children(
        self, *, statuses: Sequence[str] | None = None, run_id: str | None = None, since_ms: int | None = None
    ) -> list[ChildRow]:
        sql, args = "SELECT * FROM children WHERE 1=1", list[int | str]()
        if since_ms is not None:
            sql += " AND updated_ms >= ?"
            args.append(since_ms)
        if statuses is not None:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        rows = self._db.execute(sql + " ORDER BY created_ms, client_id", args).fetchall()
        return [_child(r) for r in rows]

    def child(self, client_id: str) -> ChildRow | None:
        row = self._db.execute("SELECT * FROM children WHERE client_id=?", (client_id,)).fetchone()
        return None if row is None else _child(row)

    # fills

    def add_fills(self, fills: Sequence[Fill]) -> int:
        """Store fills not yet stored (by symbol and trade id); returns how many were new."""
        with self._tx() as db:
            before = db.total_changes
            for f in fills:
                owner = db.execute(
                    "SELECT client_id FROM children WHERE order_id=? AND symbol=?", (f.order_id, f.symbol)
                ).fetchone()
                db.execute(
                    "INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        f.symbol, f.trade_id, f.order_id, owner[0] if owner else None, f.side, f.position_side,
                        str(f.price), str(f.qty), str(f.commission), f.commission_asset, str(f.realized_pnl),
                        int(f.maker), f.time,
                    ),
                )  # fmt: skip
            return int(db.total_changes - before)

    def filled_qty(self, since_ms: int) -> dict[tuple[str, int], Decimal]:
        """(symbol, order id) -> quantity of its journaled fills since `since_ms` (exchange time)."""
        out: dict[tuple[str, int], Decimal] = {}
        for symbol, order_id, qty in self._db.execute(
            "SELECT symbol, order_id, qty FROM fills WHERE time >= ?", (since_ms,)
        ):
            out[(symbol, order_id)] = out.get((symbol, order_id), Decimal(0)) + Decimal(qty)
        return out

    def fills_of_run(self, run_id: str) -> list[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT f.* FROM fills f JOIN children c ON f.client_id = c.client_id WHERE c.run_id=? ORDER BY f.time",
            (run_id,),
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def traded_symbols(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT symbol FROM children ORDER BY symbol").fetchall()]


def _child(r: Sequence[Any]) -> ChildRow:
    return ChildRow(
        client_id=r[0], run_id=r[1], window_ms=int(r[2]), seq=int(r[3]), symbol=r[4], position_side=r[5], leg=r[6],
        side=r[7], type=r[8], qty=Decimal(r[9]), price=None if r[10] is None else Decimal(r[10]),
        reduce_only=bool(r[11]), status=r[12], order_id=None if r[13] is None else int(r[13]),
        executed_qty=Decimal(r[14]), avg_price=Decimal(r[15]), error=r[16], created_ms=int(r[17]),
        updated_ms=int(r[18]),
    )  # fmt: skip


def open_journal(paths: DataPaths, account_id: str) -> closing[Journal]:
    return closing(Journal(journal_path(paths, account_id)))
