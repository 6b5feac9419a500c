"""Mark price, index price and funding rate snapshots from `!markPrice@arr@1s`, stored like trades: small parts
per flush under mark_price/parts/<hour>/, merged into mark_price/<hour>.parquet once the hour is over.

Values are Decimal(38, 8) (Binance prints at most 8 decimals); a row is unique by (symbol, event_time).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from collectors.parse import MarkPrice
from lsq.paths import DataPaths, atomic_write_bytes, hour_tag
from lsq.schema import PRICE
from lsq.timelabels import HOUR_MS

MARK_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "event_time": pl.Int64(),
    "mark_price": PRICE,
    "index_price": PRICE,
    "estimated_settle_price": PRICE,
    "funding_rate": pl.Decimal(38, 8),
    "next_funding_time": pl.Int64(),
}


def marks_frame(rows: Sequence[MarkPrice]) -> pl.DataFrame:
    """Validated MarkPrice tuples as a typed frame (strings converted exactly to decimals)."""
    columns: list[Sequence[object]] = list(zip(*rows, strict=True)) if rows else [[] for _ in MARK_SCHEMA]
    raw = pl.DataFrame(dict(zip(MARK_SCHEMA, columns, strict=True)), schema_overrides={"symbol": pl.String()})
    return raw.select(pl.col(c).cast(t, strict=True) for c, t in MARK_SCHEMA.items())


class MarkStore:
    """Writes and reads mark-price snapshots under `<data>/mark_price`."""

    def __init__(self, paths: DataPaths) -> None:
        self.root = paths.mark_price

    def _parts_dir(self, hour_ms: int) -> Path:
        return self.root / "parts" / hour_tag(hour_ms)

    def _hour_file(self, hour_ms: int) -> Path:
        return self.root / f"{hour_tag(hour_ms)}.parquet"

    def write_part(self, df: pl.DataFrame) -> list[Path]:
        if df.is_empty():
            return []
        written = []
        hour = pl.col("event_time") - pl.col("event_time") % HOUR_MS
        for (hour_ms,), chunk in df.with_columns(_hour=hour).partition_by("_hour", as_dict=True).items():
            chunk = chunk.drop("_hour")
            first, last = chunk.select(pl.col("event_time").min(), pl.col("event_time").max().alias("last")).row(0)
            name = f"{first}-{last}-{secrets.token_hex(4)}.parquet"
            buf = io.BytesIO()
            chunk.write_parquet(buf)
            path = self._parts_dir(int(hour_ms)) / name
            atomic_write_bytes(path, buf.getvalue())
            written.append(path)
        return written

    def compact_hour(self, hour_ms: int) -> Path | None:
        """Merge an hour's parts into its hour file, then delete them (duplicates are harmless in between)."""
        parts_dir = self._parts_dir(hour_ms)
        try:
            parts = sorted(parts_dir / n for n in os.listdir(parts_dir) if n.endswith(".parquet") and n[0] != ".")
        except FileNotFoundError:
            parts = []
        hour_file = self._hour_file(hour_ms)
        if not parts:
            return hour_file if hour_file.exists() else None
        sources = [*parts, hour_file] if hour_file.exists() else parts
        merged = (
            pl.scan_parquet(sources, schema=MARK_SCHEMA)
            .unique(["symbol", "event_time"], keep="first")
            .sort("symbol", "event_time")
            .collect()
        )
        buf = io.BytesIO()
        merged.write_parquet(buf)
        atomic_write_bytes(hour_file, buf.getvalue())
        for part in parts:
            part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            parts_dir.rmdir()
        return hour_file

    def scan(self, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Snapshots with event_time in [start, end), unique and sorted by (symbol, event_time)."""
        files: list[Path] = []
        for hour in range(start_ms - start_ms % HOUR_MS, end_ms, HOUR_MS):
            if self._hour_file(hour).exists():
                files.append(self._hour_file(hour))
            if self._parts_dir(hour).is_dir():
                files += sorted(p for p in self._parts_dir(hour).glob("*.parquet") if not p.name.startswith("."))
        if not files:
            return pl.DataFrame(schema=MARK_SCHEMA)
        return (
            pl.scan_parquet(files, schema=MARK_SCHEMA)
            .filter(pl.col("event_time").is_between(start_ms, end_ms, closed="left"))
            .unique(["symbol", "event_time"], keep="first")
            .sort("symbol", "event_time")
            .collect()
        )
