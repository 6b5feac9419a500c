"""The target files the sizing step writes (data/positions/{account_id}_target_positions_*.json), read for
monitoring: a window's decision time, its target quantities and decision prices.

NOTE: a stop-gap. The schema is moving into the core module `lsq/targets.py`; once that is on main this reader
should be replaced by it. The format is factors/sizing.py's: {account_id, timestamp (ms, window end), positions:
[{symbol, target_position (exact string), price (exact string), ...}]}.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from decimal import InvalidOperation
from pathlib import Path

import polars as pl

from lsq.paths import DataPaths
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


def read_targets(
    paths: DataPaths, account_id: str, start_ms: int | None = None, end_ms: int | None = None
) -> pl.DataFrame:
    """Every target of the account's files decided in [start_ms, end_ms), as one frame `window_ms` (the decision
    time), `symbol, target_position, price`. Unreadable files are logged and skipped (one bad file must not hide
    the others); a window whose file lists no symbol keeps a row with a null symbol, so it still counts."""
    times: list[int] = []
    rows: list[tuple[str, str, str]] = []
    empty: list[int] = []
    for path in _files(paths, account_id):
        try:
            _, timestamp, found = _load(path)
        except ValueError as exc:
            log.warning("%s", exc)
            continue
        if (start_ms is None or timestamp >= start_ms) and (end_ms is None or timestamp < end_ms):
            times.extend([timestamp] * len(found))
            rows.extend(found)
            if not found:
                empty.append(timestamp)
    frame = _frame(times, rows)
    if empty:
        frame = pl.concat([frame, pl.DataFrame({"window_ms": empty}, schema={"window_ms": pl.Int64()})], how="diagonal")
    return frame.sort("window_ms", "symbol", maintain_order=True)


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
