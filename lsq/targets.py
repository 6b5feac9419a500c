"""The target-position file: the contract between sizing (which writes it) and execution (which reads it).

data/positions/{account_id}_target_positions_{YYYYmmdd_HHMMSS}.json, stamped with the UTC end of the window:
{account_id, timestamp (ms, window end), window_start (ms), partition, label, capital, gross_notional,
positions: [{symbol: "BTCUSDT", target_position: "-0.123" (exact Decimal string on the step grid),
target_notional: float (qty x price, for information), price: "..." (the decision price, exact)}]}.
Every universe symbol is listed, with "0" where no position is wanted; a symbol that is absent also means 0.
Quantities and prices are strings so no float ever touches an order quantity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from lsq.exchange.rules import ZERO, to_decimal
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import WINDOW_MS, label_of, partition_key, to_datetime

_NAME = re.compile(r"^(?P<account>[A-Za-z0-9_]+)_target_positions_(?P<stamp>\d{8}_\d{6})\.json$")


class TargetFileError(ValueError):
    """A target file that cannot be executed, with a message naming the file and the problem."""


def plain(value: Decimal) -> str:
    """Decimal as a plain string without exponent or trailing zeros ('0.001', '-12', '0')."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


@dataclass(frozen=True)
class TargetPosition:
    symbol: str
    target_position: Decimal
    target_notional: Decimal
    price: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "target_position": plain(self.target_position),
            "target_notional": float(self.target_notional),
            "price": plain(self.price),
        }


@dataclass(frozen=True)
class TargetFile:
    account_id: str
    window_ms: int  # start of the decision window
    capital: Decimal
    positions: tuple[TargetPosition, ...]
    path: Path | None = None

    @property
    def window_end_ms(self) -> int:
        return self.window_ms + WINDOW_MS

    @property
    def label(self) -> str:
        return label_of(self.window_ms)

    def quantities(self) -> dict[str, Decimal]:
        return {p.symbol: p.target_position for p in self.positions}

    def decision_prices(self) -> dict[str, Decimal]:
        return {p.symbol: p.price for p in self.positions if p.price > 0}


def positions_file(paths: DataPaths, account_id: str, window_ms: int) -> Path:
    stamp = to_datetime(window_ms + WINDOW_MS).strftime("%Y%m%d_%H%M%S")
    return paths.positions / f"{account_id}_target_positions_{stamp}.json"


def write_targets(
    paths: DataPaths, account_id: str, window_ms: int, capital: Decimal, positions: Sequence[TargetPosition]
) -> Path:
    """Write one account's targets for the window atomically; returns the file."""
    path = positions_file(paths, account_id, window_ms)
    document = {
        "account_id": account_id,
        "timestamp": window_ms + WINDOW_MS,
        "window_start": window_ms,
        "partition": partition_key(window_ms),
        "label": label_of(window_ms),
        "capital": plain(capital),
        "gross_notional": float(sum((abs(p.target_notional) for p in positions), ZERO)),
        "positions": [p.as_json() for p in positions],
    }
    atomic_write_text(path, json.dumps(document, indent=1))
    return path


def read_targets(path: Path) -> TargetFile:
    """Parse a target file; any problem is one TargetFileError naming the file."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise TargetFileError(f"cannot read target file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise TargetFileError(f"target file {path} is not valid JSON: {exc}") from None
    try:
        positions = tuple(
            TargetPosition(
                symbol=str(p["symbol"]),
                target_position=to_decimal(p["target_position"], f"{p['symbol']} target_position"),
                target_notional=to_decimal(p.get("target_notional", 0), f"{p['symbol']} target_notional"),
                price=to_decimal(p.get("price", 0), f"{p['symbol']} price"),
            )
            for p in doc["positions"]
        )
        window_ms = int(doc.get("window_start", int(doc["timestamp"]) - WINDOW_MS))
        return TargetFile(
            str(doc["account_id"]), window_ms, to_decimal(doc.get("capital", 0), "capital"), positions, path
        )
    except KeyError as exc:
        raise TargetFileError(f"target file {path} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise TargetFileError(f"target file {path}: {exc}") from None


def target_files(paths: DataPaths, account_id: str) -> list[Path]:
    """The account's target files, oldest first (names sort by their UTC stamp)."""
    if not paths.positions.is_dir():
        return []
    found = []
    for path in paths.positions.iterdir():
        match = _NAME.match(path.name)
        if match and match["account"] == account_id:
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def latest_targets(paths: DataPaths, account_id: str) -> Path | None:
    files = target_files(paths, account_id)
    return files[-1] if files else None
