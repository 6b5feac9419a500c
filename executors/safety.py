"""Safety switches: the per-account kill switch (halt / reduce-only, a file in the data directory read before every
child order), the automatic drawdown halt, and the explicit confirmation live trading requires.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from lsq.config import Settings
from lsq.paths import DataPaths, atomic_write_text

HaltMode = Literal["halt", "reduce_only"]
CONFIRM_ENV = "LSQ_CONFIRM_LIVE"


class LiveNotConfirmed(ValueError):
    """Live trading was asked for without the confirmation naming the account."""


@dataclass(frozen=True)
class HaltState:
    mode: HaltMode
    reason: str
    since_ms: int


def halt_file(paths: DataPaths, account_id: str) -> Path:
    return paths.execution(account_id) / "halt.json"


def read_halt(paths: DataPaths, account_id: str) -> HaltState | None:
    """The account's switch, or None when trading is allowed. An unreadable file counts as a full halt."""
    path = halt_file(paths, account_id)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return HaltState("halt", f"unreadable halt file {path}", 0)
    mode = doc.get("mode")
    return HaltState(
        mode if mode in ("halt", "reduce_only") else "halt", str(doc.get("reason", "")), int(doc.get("since_ms", 0))
    )


def set_halt(paths: DataPaths, account_id: str, mode: HaltMode, reason: str, now_ms: int) -> HaltState:
    state = HaltState(mode, reason, now_ms)
    atomic_write_text(halt_file(paths, account_id), json.dumps({"mode": mode, "reason": reason, "since_ms": now_ms}))
    return state


def clear_halt(paths: DataPaths, account_id: str) -> bool:
    """Resume trading; also resets the drawdown peak, so a resumed account is not halted again at once."""
    path = halt_file(paths, account_id)
    existed = path.exists()
    path.unlink(missing_ok=True)
    peak_file(paths, account_id).unlink(missing_ok=True)
    return existed


def peak_file(paths: DataPaths, account_id: str) -> Path:
    return paths.execution(account_id) / "equity_peak.json"


def check_drawdown(
    paths: DataPaths, account_id: str, equity: Decimal, max_drawdown: float | None, now_ms: int
) -> HaltState | None:
    """Track the equity peak; below peak x (1 - max_drawdown) the account is halted (and the halt returned)."""
    path = peak_file(paths, account_id)
    try:
        peak = Decimal(json.loads(path.read_text())["peak"])
    except (OSError, ValueError, KeyError):
        peak = Decimal(0)
    if equity > peak:
        atomic_write_text(path, json.dumps({"peak": str(equity), "ms": now_ms}))
        peak = equity
    if max_drawdown is not None and peak > 0 and equity < peak * (1 - Decimal(str(max_drawdown))):
        reason = f"drawdown: equity {equity:.2f} is more than {max_drawdown:.0%} under its peak {peak:.2f}"
        return set_halt(paths, account_id, "halt", reason, now_ms)
    return None


def confirmed_accounts(flag: Collection[str] | None, env: Mapping[str, str] | None = None) -> set[str]:
    env = os.environ if env is None else env
    named = set(flag or ())
    named |= {a.strip() for a in env.get(CONFIRM_ENV, "").split(",") if a.strip()}
    return named


def require_live_confirmation(
    settings: Settings,
    account_id: str,
    dry_run: bool,
    flag: Collection[str] | None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Live orders need the account named by --confirm-live or $LSQ_CONFIRM_LIVE; mock, testnet and dry runs do not."""
    if settings.execution.mode != "live" or dry_run:
        return
    if account_id not in confirmed_accounts(flag, env):
        raise LiveNotConfirmed(
            f"refusing to trade live account {account_id!r}: confirm with --confirm-live {account_id} "
            f"or {CONFIRM_ENV}={account_id}"
        )
