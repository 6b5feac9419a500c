"""An account at a glance, from the store: what the Dagster account-state asset and the web monitor show.

These are the entry points for the thin layers above monitoring (assets, checks, web panels): each reads the store
and the target files once and returns plain values (`as_dict` is JSON-ready, `metadata` numeric for Dagster plots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS, MINUTE_MS
from monitoring.equity import equity_curve, summarize
from monitoring.history import position_changes, position_legs
from monitoring.metrics import (
    DeviationSummary,
    Exposure,
    Health,
    deviation_by_symbol,
    deviation_summary,
    exposure,
    health,
)
from monitoring.store import AccountStore
from monitoring.targets import latest_target


@dataclass(frozen=True)
class AccountView:
    account_id: str
    snapshot: dict[str, Any]
    positions: pl.DataFrame  # the snapshot's positions (held and targeted symbols, at mark)
    exposure: Exposure
    health: Health
    target_ms: int | None  # the decision time of the targets the deviation is measured against
    deviation: DeviationSummary | None
    deviation_by_symbol: pl.DataFrame
    drawdown: float  # from the peak of the stored transfer-adjusted curve
    watcher: dict[str, Any] | None  # the watcher's status file

    def metadata(self) -> dict[str, float]:
        """Numbers for Dagster's asset page (it plots numeric metadata over materializations)."""
        out = {
            "equity": float(self.snapshot["equity"]),
            "available_balance": float(self.snapshot["available_balance"]),
            "drawdown": self.drawdown,
            "gross": self.exposure.gross,
            "net": self.exposure.net,
            "leverage": self.exposure.leverage,
            "margin_ratio": self.health.margin_ratio,
            "deviation": self.deviation.share if self.deviation else None,
            "deviation_notional": self.deviation.deviation_notional if self.deviation else None,
        }
        return {k: float(v) for k, v in out.items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        snapshot = {k: (str(v) if not isinstance(v, int | float | type(None)) else v) for k, v in self.snapshot.items()}
        return {
            "account_id": self.account_id,
            "snapshot": snapshot,
            "exposure": self.exposure.as_dict(),
            "health": self.health.as_dict(),
            "target_ms": self.target_ms,
            "deviation": self.deviation.as_dict() if self.deviation else None,
            "deviation_by_symbol": self.deviation_by_symbol.to_dicts(),
            "positions": self.positions.with_columns(
                pl.col(c).cast(pl.String) for c, d in self.positions.schema.items() if isinstance(d, pl.Decimal)
            ).to_dicts(),
            "drawdown": self.drawdown,
            "watcher": self.watcher,
        }


def account_view(paths: DataPaths, account_id: str) -> AccountView | None:
    """The newest snapshot with its exposure, health, deviation from the targets in force and drawdown; None
    before the watcher stored anything for the account."""
    store = AccountStore(paths, account_id)
    snap, positions = store.latest()
    if snap is None:
        return None
    t = int(snap["time_ms"])
    held = positions.filter(pl.col("position_amt") != 0)
    target = latest_target(paths, account_id, t)
    by_symbol = pl.DataFrame()
    summary = None
    if target is not None:
        by_symbol = deviation_by_symbol(positions, target.positions)
        summary = deviation_summary(by_symbol)
    stored = store.last_row("equity")
    if stored is not None:
        drawdown = float(stored["drawdown"])
    else:  # before the curve's first completed minute
        curve = equity_curve(store.read("snapshots", t - DAY_MS, t + 1), store.read("income", None, t + 1))
        drawdown = float(curve["drawdown"][-1]) if curve.height else 0.0
    return AccountView(
        account_id=account_id,
        snapshot=snap,
        positions=positions,
        exposure=exposure(held, snap["equity"]),
        health=health(snap["wallet_balance"], snap["unrealized_pnl"], snap["maint_margin"], snap["available_balance"]),
        target_ms=None if target is None else target.timestamp_ms,
        deviation=summary,
        deviation_by_symbol=by_symbol,
        drawdown=drawdown,
        watcher=store.read_status(),
    )


def update_equity_curve(paths: DataPaths, account_id: str, now_ms: int) -> int:
    """Append the completed minutes since the stored curve's last sample (the watcher calls this after each full
    snapshot: one writer); returns how many were added. A transfer stamped before the last stored sample but
    published after it is not in the curve (the snapshots' equity still is)."""
    store = AccountStore(paths, account_id)
    last = store.last_row("equity")
    since = None if last is None else int(last["time_ms"]) + 1
    minute = now_ms - now_ms % MINUTE_MS
    new = equity_curve(store.read("snapshots", since, minute), store.read("income", since, minute), last)
    return store.append("equity", new)


def account_curve(
    paths: DataPaths, account_id: str, start_ms: int | None = None, end_ms: int | None = None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The stored minute curve over [start_ms, end_ms) and its summary (return, PnL, transfers, Sharpe, max DD)."""
    curve = AccountStore(paths, account_id).read("equity", start_ms, end_ms)
    return curve, summarize(curve, start_ms, end_ms).as_dict()


def account_history(paths: DataPaths, account_id: str, end_ms: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every position change and every leg up to `end_ms`, from all stored fills and funding."""
    store = AccountStore(paths, account_id)
    fills, income = store.read("fills", None, end_ms), store.read("income", None, end_ms)
    return position_changes(fills, income), position_legs(fills, income)
