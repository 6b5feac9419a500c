"""The target files the sizing step writes (data/positions/{account_id}_target_positions_*.json), read for
monitoring: a window's decision time, its target quantities and decision prices.

NOTE: a stop-gap. The schema is moving into the core module `lsq/targets.py`; once that is on main this reader
should be replaced by it. The format is factors/sizing.py's: {account_id, timestamp (ms, window end), positions:
[{symbol, target_position (exact string), price (exact string), ...}]}.

A range (the strategy report's) is read through a compact index, data/monitoring/{account}/targets/YYYY-MM-DD.parquet
per UTC day of the files' stamps: the parsed rows with each source file's name, size and mtime. A day whose files
are all indexed unchanged is one parquet read; new or changed files are parsed and the day's index is replaced
atomically. Why: parsing 8,640 JSON files was 3.7 s of the 6.4 s 30-day report (benchmarks/bench_monitoring.py).
The files stay the truth: the index is a cache any reader can rebuild (delete it to force that).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import InvalidOperation
from pathlib import Path

import polars as pl

from lsq.paths import DataPaths, atomic_write_bytes
from lsq.timelabels import to_datetime
from monitoring.store import MONEY

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass(frozen=True)
class TargetFile:
    account_id: str
    timestamp_ms: int
    positions: pl.DataFrame  # symbol, target_position, price (Decimal)
    path: Path


def _files(paths: DataPaths, account_id: str) -> list[Path]:
    if not paths.positions.exists():
        return []
    return sorted(paths.positions.glob(f"{account_id}_target_positions_*.json"))


TARGETS_SCHEMA: dict[str, pl.DataType] = {
    "window_ms": pl.Int64(),
    "symbol": pl.String(),
    "target_position": MONEY,
    "price": MONEY,
}


def _load(path: Path) -> tuple[str, int, list[tuple[str, str, str]]]:
    """account_id, decision time and (symbol, target, price) strings; ValueError naming the file otherwise."""
    try:
        doc = json.loads(path.read_text())
        rows = [(str(p["symbol"]), str(p["target_position"]), str(p.get("price") or "0")) for p in doc["positions"]]
        for _, target, price in rows:  # cheap enough for 8640 files a month; Decimal() per value is not
            if not (_NUMBER.match(target) and _NUMBER.match(price)):
                raise ValueError(f"not a number: {target!r} / {price!r}")
        return str(doc["account_id"]), int(doc["timestamp"]), rows
    except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"{path}: not a target file ({type(exc).__name__}: {exc})") from None


def _frame(window_ms: list[int], rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    symbol, target, price = zip(*rows, strict=True) if rows else ((), (), ())
    text = {"window_ms": window_ms, "symbol": list(symbol), "target_position": list(target), "price": list(price)}
    schema = {k: (pl.String() if v == MONEY else v) for k, v in TARGETS_SCHEMA.items()}
    return pl.DataFrame(text, schema=schema).with_columns(pl.col("target_position", "price").cast(MONEY))


def parse_target_file(path: Path) -> TargetFile:
    """One target file; ValueError naming the file and the problem when it is not one."""
    account_id, timestamp, rows = _load(path)
    return TargetFile(account_id, timestamp, _frame([timestamp] * len(rows), rows).drop("window_ms"), path)


INDEX_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "size": pl.Int64(),
    "mtime_ns": pl.Int64(),
    **TARGETS_SCHEMA,  # window_ms null: the file could not be read (logged when indexed)
}
_SOURCE = ["file", "size", "mtime_ns"]


def _sources(paths: DataPaths, account_id: str) -> dict[str, dict[str, tuple[int, int]]]:
    """The account's target files by UTC day of their stamp (YYYY-MM-DD): name -> (size, mtime_ns)."""
    days: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    if not paths.positions.exists():
        return days
    name = re.compile(re.escape(account_id) + r"_target_positions_(\d{4})(\d{2})(\d{2})_\d{6}\.json")
    with os.scandir(paths.positions) as entries:
        for entry in entries:
            stamp = name.fullmatch(entry.name)
            if stamp:
                st = entry.stat()
                days["-".join(stamp.groups())][entry.name] = (st.st_size, st.st_mtime_ns)
    return days


def _index_rows(path: Path, size: int, mtime_ns: int) -> pl.DataFrame:
    """One file's index rows: its targets, a null symbol for an empty file, a null window for an unreadable one."""
    try:
        _, timestamp, rows = _load(path)
        frame = _frame([timestamp] * len(rows), rows) if rows else pl.DataFrame({"window_ms": [timestamp]})
    except ValueError as exc:
        log.warning("%s", exc)
        frame = pl.DataFrame({"window_ms": [None]})
    source = {"file": path.name, "size": size, "mtime_ns": mtime_ns}
    frame = frame.with_columns(pl.lit(v).alias(k) for k, v in source.items())
    return frame.select(
        (pl.col(k) if k in frame.columns else pl.lit(None)).cast(v).alias(k) for k, v in INDEX_SCHEMA.items()
    )


def _day_index(paths: DataPaths, account_id: str, day: str, files: dict[str, tuple[int, int]]) -> pl.DataFrame:
    """The day's index, brought up to date with `files` (rewritten only when a file was added, changed or removed)."""
    path = paths.monitoring_account(account_id) / "targets" / f"{day}.parquet"
    index = pl.DataFrame(schema=INDEX_SCHEMA)
    if path.exists():
        try:  # bytes read once: a concurrent rebuild replaces the file atomically
            index = pl.read_parquet(io.BytesIO(path.read_bytes())).select(list(INDEX_SCHEMA))
        except (OSError, pl.exceptions.PolarsError) as exc:
            log.warning("%s: unreadable target index, rebuilding it (%s)", path, exc)
    current = pl.DataFrame(
        [(name, size, mtime) for name, (size, mtime) in files.items()],
        schema={k: INDEX_SCHEMA[k] for k in _SOURCE},
        orient="row",
    )
    kept = index.join(current, on=_SOURCE, how="semi")
    missing = current.join(kept.select(_SOURCE).unique(), on=_SOURCE, how="anti")
    if missing.height == 0 and kept.height == index.height:
        return index
    fresh = [_index_rows(paths.positions / name, size, mtime) for name, size, mtime in missing.iter_rows()]
    index = pl.concat([kept, *fresh]).sort("file", maintain_order=True)
    buf = io.BytesIO()
    index.write_parquet(buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:  # a read-only data directory still gets its report, parsed every time
        log.warning("%s: target index not written (%s)", path, exc)
    return index


def read_targets(
    paths: DataPaths, account_id: str, start_ms: int | None = None, end_ms: int | None = None
) -> pl.DataFrame:
    """Every target of the account's files decided in [start_ms, end_ms), as one frame `window_ms` (the decision
    time), `symbol, target_position, price`, through the day index. Unreadable files are logged (when indexed) and
    skipped: one bad file must not hide the others; a window whose file lists no symbol keeps a row with a null
    symbol, so it still counts. Files are picked by the day of their stamp (by contract their decision time)."""
    first = None if start_ms is None else to_datetime(start_ms).strftime("%Y-%m-%d")
    last = None if end_ms is None else to_datetime(end_ms - 1).strftime("%Y-%m-%d")
    days = [
        _day_index(paths, account_id, day, files)
        for day, files in sorted(_sources(paths, account_id).items())
        if (first is None or day >= first) and (last is None or day <= last)
    ]
    frame = pl.concat(days) if days else pl.DataFrame(schema=INDEX_SCHEMA)
    window = pl.col("window_ms")
    keep = window.is_not_null()
    if start_ms is not None:
        keep &= window >= start_ms
    if end_ms is not None:
        keep &= window < end_ms
    return frame.filter(keep).select(list(TARGETS_SCHEMA)).sort("window_ms", "symbol", maintain_order=True)


def latest_target(paths: DataPaths, account_id: str, at_ms: int | None = None) -> TargetFile | None:
    """The newest target file (decided at or before `at_ms` when given)."""
    for path in reversed(_files(paths, account_id)):
        try:
            target = parse_target_file(path)
        except ValueError as exc:
            log.warning("%s", exc)
            continue
        if at_ms is None or target.timestamp_ms <= at_ms:
            return target
    return None
