"""The account store: what the watcher learnt about each account, as parquet under data/monitoring/{account_id}/.

  snapshots/YYYY-MM-DD.parquet   one row per REST snapshot: balances, equity, margins, margin ratio
  positions/YYYY-MM-DD.parquet   per snapshot, every held or targeted symbol with its mark and notional
  income/YYYY-MM.parquet         every income record (REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER, ...)
  fills/YYYY-MM.parquet          every fill (userTrades rows, or ORDER_TRADE_UPDATE trades until REST confirms)
  orders/YYYY-MM-DD.parquet      every ORDER_TRADE_UPDATE, for the order log
  equity/YYYY-MM.parquet         the transfer-adjusted minute equity curve (monitoring.equity), completed minutes
  status.json                    the watcher's heartbeat for this account

Money is Decimal(38, 10), so fees and funding add up exactly to the exchange's records. An append rewrites the
affected period file atomically (read, merge, deduplicate on the kind's key, write via a rename): readers see the old
or the new file, never half of one, and a record stored twice is kept once. Income is deduplicated by tranId with
the type and symbol, because Binance books funding of several symbols under one tranId; nothing distinct is dropped.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from lsq.paths import DataPaths, atomic_write_bytes, atomic_write_text
from lsq.timelabels import to_datetime
from monitoring.equity import CURVE_SCHEMA

MONEY = pl.Decimal(38, 10)

Kind = Literal["snapshots", "positions", "income", "fills", "orders", "equity"]


@dataclass(frozen=True)
class Layout:
    schema: dict[str, pl.DataType]
    key: tuple[str, ...]
    period: Literal["day", "month"]


LAYOUTS: dict[str, Layout] = {
    "snapshots": Layout(
        {
            "time_ms": pl.Int64(),
            "wallet_balance": MONEY,
            "unrealized_pnl": MONEY,
            "equity": MONEY,
            "available_balance": MONEY,
            "initial_margin": MONEY,
            "maint_margin": MONEY,
            "margin_ratio": pl.Float64(),
        },
        ("time_ms",),
        "day",
    ),
    "positions": Layout(
        {
            "time_ms": pl.Int64(),
            "symbol": pl.String(),
            "position_side": pl.String(),
            "position_amt": MONEY,
            "entry_price": MONEY,
            "mark_price": MONEY,
            "notional": MONEY,
            "unrealized_pnl": MONEY,
            "maint_margin": MONEY,
        },
        ("time_ms", "symbol", "position_side"),
        "day",
    ),
    "income": Layout(
        {
            "tran_id": pl.Int64(),
            "time_ms": pl.Int64(),
            "symbol": pl.String(),
            "income_type": pl.String(),
            "income": MONEY,
            "asset": pl.String(),
            "info": pl.String(),
            "trade_id": pl.String(),
        },
        ("tran_id", "income_type", "symbol"),
        "month",
    ),
    "fills": Layout(
        {
            "trade_id": pl.Int64(),
            "time_ms": pl.Int64(),
            "symbol": pl.String(),
            "order_id": pl.Int64(),
            "side": pl.String(),
            "position_side": pl.String(),
            "price": MONEY,
            "qty": MONEY,
            "quote_qty": MONEY,
            "commission": MONEY,
            "commission_asset": pl.String(),
            "realized_pnl": MONEY,
            "maker": pl.Boolean(),
        },
        ("symbol", "trade_id"),
        "month",
    ),
    "orders": Layout(
        {
            "time_ms": pl.Int64(),
            "symbol": pl.String(),
            "order_id": pl.Int64(),
            "client_order_id": pl.String(),
            "side": pl.String(),
            "order_type": pl.String(),
            "exec_type": pl.String(),
            "status": pl.String(),
            "price": MONEY,
            "avg_price": MONEY,
            "orig_qty": MONEY,
            "filled_qty": MONEY,
            "reduce_only": pl.Boolean(),
        },
        ("symbol", "order_id", "time_ms", "exec_type", "filled_qty"),
        "day",
    ),
    "equity": Layout(CURVE_SCHEMA, ("minute_ms",), "month"),
}


def empty(kind: Kind) -> pl.DataFrame:
    return pl.DataFrame(schema=LAYOUTS[kind].schema)


def as_frame(kind: Kind, rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (values as Binance sends them: numbers as strings) to the kind's typed frame; unknown keys are dropped."""
    layout = LAYOUTS[kind]
    rows = list(rows)
    if not rows:
        return empty(kind)
    raw = pl.DataFrame(
        {name: [_cell(r.get(name), dtype) for r in rows] for name, dtype in layout.schema.items()},
        schema={name: (pl.String() if dtype == MONEY else dtype) for name, dtype in layout.schema.items()},
    )
    return raw.with_columns(pl.col(n).cast(MONEY) for n, d in layout.schema.items() if d == MONEY)


def _cell(value: Any, dtype: pl.DataType) -> Any:
    if value is None:
        return None
    if dtype == MONEY:
        return str(value)
    if dtype == pl.Int64():
        return int(value)
    if dtype == pl.Float64():
        return float(value)
    if dtype == pl.Boolean():
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return str(value)


def _read(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """One file, opened once. `pl.read_parquet(path)` opens the path more than once (footer, then pages): racing a
    writer's atomic replace it paired one version's footer with the next one's pages ("wrong page size", even a
    panic) within seconds of a loop; the bytes read once never did (9,400 reads)."""
    return pl.read_parquet(io.BytesIO(path.read_bytes()), columns=columns)


def _tag(time_ms: int, period: str) -> str:
    return to_datetime(time_ms).strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


class AccountStore:
    """One account's files. Written by one watcher; read by anyone at any time."""

    def __init__(self, paths: DataPaths, account_id: str) -> None:
        self.account_id = account_id
        self.root = paths.monitoring_account(account_id)

    def _dir(self, kind: Kind) -> Path:
        return self.root / kind

    def append(self, kind: Kind, frame: pl.DataFrame) -> int:
        """Merge `frame` into the store; returns how many rows were new."""
        layout = LAYOUTS[kind]
        if frame.height == 0:
            return 0
        frame = frame.select(pl.col(n).cast(d) for n, d in layout.schema.items())
        fmt = "%Y-%m-%d" if layout.period == "day" else "%Y-%m"
        tagged = frame.with_columns(pl.from_epoch(pl.col("time_ms"), time_unit="ms").dt.strftime(fmt).alias("_tag"))
        added = 0
        for (tag,), part in tagged.group_by("_tag"):
            path = self._dir(kind) / f"{tag}.parquet"
            new = part.drop("_tag")
            old = _read(path) if path.exists() else empty(kind)
            order = ["time_ms", *[k for k in layout.key if k != "time_ms"]]
            new = new.unique(subset=list(layout.key), keep="last", maintain_order=True).sort(order)
            newest = old["time_ms"].max()
            if old.height == 0 or (isinstance(newest, int) and int(new["time_ms"].min()) > newest):  # type: ignore[arg-type]
                merged = pl.concat([old, new])  # the usual case, later rows only: no need to re-sort the day
            else:
                merged = pl.concat([old, new]).unique(subset=list(layout.key), keep="last", maintain_order=True)
                merged = merged.sort(order)
            added += merged.height - old.height
            buf = io.BytesIO()
            merged.write_parquet(buf)
            atomic_write_bytes(path, buf.getvalue())
        return added

    def read(self, kind: Kind, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """Rows with start_ms <= time_ms < end_ms (either bound optional), sorted by time."""
        layout = LAYOUTS[kind]
        files = sorted(self._dir(kind).glob("*.parquet")) if self._dir(kind).exists() else []
        lo = _tag(start_ms, layout.period) if start_ms is not None else None
        hi = _tag(end_ms, layout.period) if end_ms is not None else None
        chosen = [f for f in files if (lo is None or f.stem >= lo) and (hi is None or f.stem <= hi)]
        if not chosen:
            return empty(kind)
        frame = pl.concat([_read(f) for f in chosen])
        if start_ms is not None:
            frame = frame.filter(pl.col("time_ms") >= start_ms)
        if end_ms is not None:
            frame = frame.filter(pl.col("time_ms") < end_ms)
        return frame.sort("time_ms", maintain_order=True)

    def last_time(self, kind: Kind) -> int | None:
        """Time of the newest stored row of `kind` (reads only the newest file)."""
        files = sorted(self._dir(kind).glob("*.parquet")) if self._dir(kind).exists() else []
        for f in reversed(files):
            newest = _read(f, ["time_ms"])["time_ms"].max()
            if newest is not None:
                return int(newest)  # type: ignore[arg-type]
        return None

    def last_row(self, kind: Kind) -> dict[str, Any] | None:
        """The newest stored row of `kind`, or None."""
        at = self.last_time(kind)
        if at is None:
            return None
        return self.read(kind, at, at + 1).row(-1, named=True)

    def latest(self) -> tuple[dict[str, Any] | None, pl.DataFrame]:
        """The newest snapshot (a dict) and its positions; (None, empty) before the first."""
        at = self.last_time("snapshots")
        if at is None:
            return None, empty("positions")
        snap = self.read("snapshots", at, at + 1).row(0, named=True)
        return snap, self.read("positions", at, at + 1)

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    def write_status(self, status: Mapping[str, Any]) -> None:
        atomic_write_text(self.status_path, json.dumps(status, indent=1, sort_keys=True))

    def read_status(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except FileNotFoundError:
            return None
