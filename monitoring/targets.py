"""The target files the sizing step writes (data/positions/{account_id}_target_positions_*.json), read for
monitoring: a window's decision time, its target quantities and decision prices.

NOTE: a stop-gap. The schema is moving into the core module `lsq/targets.py`; once that is on main this reader
should be replaced by it. The format is factors/sizing.py's: {account_id, timestamp (ms, window end), positions:
[{symbol, target_position (exact string), price (exact string), ...}]}.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from lsq.paths import DataPaths
from monitoring.store import MONEY

log = logging.getLogger(__name__)


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


def parse_target_file(path: Path) -> TargetFile:
    """One target file; ValueError naming the file and the problem when it is not one."""
    try:
        doc = json.loads(path.read_text())
        rows = [
            {
                "symbol": str(p["symbol"]),
                "target_position": str(Decimal(str(p["target_position"]))),
                "price": str(Decimal(str(p.get("price") or "0"))),
            }
            for p in doc["positions"]
        ]
        timestamp = int(doc["timestamp"])
        account_id = str(doc["account_id"])
    except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"{path}: not a target file ({type(exc).__name__}: {exc})") from None
    frame = pl.DataFrame(rows, schema={"symbol": pl.String, "target_position": pl.String, "price": pl.String})
    frame = frame.with_columns(pl.col("target_position", "price").cast(MONEY))
    return TargetFile(account_id, timestamp, frame, path)


def read_targets(
    paths: DataPaths, account_id: str, start_ms: int | None = None, end_ms: int | None = None
) -> list[TargetFile]:
    """The account's target files with start_ms <= timestamp < end_ms, oldest first; unreadable files are logged
    and skipped (one bad file must not hide the others)."""
    out = []
    for path in _files(paths, account_id):
        try:
            target = parse_target_file(path)
        except ValueError as exc:
            log.warning("%s", exc)
            continue
        if (start_ms is None or target.timestamp_ms >= start_ms) and (end_ms is None or target.timestamp_ms < end_ms):
            out.append(target)
    return sorted(out, key=lambda t: t.timestamp_ms)


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
