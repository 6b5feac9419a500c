"""Scripted account-store contents for the web monitor's tests, written through monitoring.store as the account
watcher writes them: three hours of snapshots with a deposit, positions, targets, orders, fills and income."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from lsq.paths import DataPaths
from lsq.targets import TargetPosition, write_targets
from lsq.timelabels import MINUTE_MS, WINDOW_MS
from monitoring.state import update_equity_curve
from monitoring.store import AccountStore, Kind, as_frame


def write_rows(paths: DataPaths, account: str, kind: Kind, rows: Iterable[Mapping[str, Any]]) -> None:
    """Merge rows into the account store, as the watcher does (values as Binance sends them)."""
    AccountStore(paths, account).append(kind, as_frame(kind, rows))


@dataclass(frozen=True)
class Scenario:
    """What the scripted account holds, so tests can check the figures the monitor shows."""

    now_ms: int
    snapshot_times: list[int]
    equities: list[float]
    deposit_ms: int
    deposit: float
    fees: Decimal
    funding_received: Decimal
    funding_paid: Decimal
    last_snapshot_ms: int


def equity_at(i: int, deposited: bool) -> float:
    return round(100_000 + 300 * math.sin(i / 20) + 5 * i + (10_000 if deposited else 0), 2)


def script_account(paths: DataPaths, account: str, now_ms: int, minutes: int = 180) -> Scenario:
    """Three hours of minute snapshots with a deposit half way, positions against targets (one symbol held with a
    target of 0, one targeted and not held), orders, fills and income (commission, funding both ways, PnL)."""
    first = (now_ms - minutes * MINUTE_MS) // MINUTE_MS * MINUTE_MS
    times = [first + i * MINUTE_MS for i in range(minutes)]
    deposit_ms = times[minutes // 2] + 30_000
    equities = [equity_at(i, t > deposit_ms) for i, t in enumerate(times)]
    write_rows(
        paths,
        account,
        "snapshots",
        [
            {
                "time_ms": t,
                "wallet_balance": e - 150,
                "unrealized_pnl": 150,
                "equity": e,
                "available_balance": round(e * 0.7, 2),
                "initial_margin": 28_000,
                "maint_margin": 420,
                "margin_ratio": 420 / e,
            }
            for t, e in zip(times, equities, strict=True)
        ],
    )
    last = times[-1]
    held = [("BTCUSDT", "0.5", "59000", "60000"), ("ETHUSDT", "-8", "3050", "3000"), ("SOLUSDT", "20", "140", "150")]
    write_rows(
        paths,
        account,
        "positions",
        [
            {
                "time_ms": last,
                "symbol": s,
                "position_side": "BOTH",
                "position_amt": q,
                "entry_price": entry,
                "mark_price": mark,
                "notional": Decimal(q) * Decimal(mark),
                "unrealized_pnl": Decimal(q) * (Decimal(mark) - Decimal(entry)),
                "maint_margin": 100,
            }
            for s, q, entry, mark in held
        ],
    )
    targets = [
        ("BTCUSDT", "0.45", "60010"),
        ("ETHUSDT", "-8", "2999"),
        ("SOLUSDT", "0", "150"),
        ("DOGEUSDT", "10000", "0.2"),
    ]
    window = (last - WINDOW_MS) // WINDOW_MS * WINDOW_MS
    write_targets(
        paths,
        account,
        window,
        Decimal(100_000),
        [TargetPosition(s, Decimal(q), Decimal(q) * Decimal(p), Decimal(p)) for s, q, p in targets],
    )
    t0 = last - 20 * MINUTE_MS
    decided = [("BTCUSDT", "0.5", "59990"), ("ETHUSDT", "-8", "3001"), ("SOLUSDT", "20", "149.9")]
    write_targets(  # the window the fills below trade: decided at or before t0
        paths,
        account,
        t0 // WINDOW_MS * WINDOW_MS - WINDOW_MS,
        Decimal(100_000),
        [TargetPosition(s, Decimal(q), Decimal(q) * Decimal(p), Decimal(p)) for s, q, p in decided],
    )
    orders = [
        (t0, "BTCUSDT", 11, "BUY", "0.5", "60000", "FILLED"),
        (t0 + 1000, "ETHUSDT", 12, "SELL", "8", "3000", "FILLED"),
        (t0 + 2000, "SOLUSDT", 13, "BUY", "20", "150", "PARTIALLY_FILLED"),
    ]
    write_rows(
        paths,
        account,
        "orders",
        [
            {
                "time_ms": t,
                "symbol": s,
                "order_id": oid,
                "client_order_id": f"lsq-{account}-{oid}",
                "side": side,
                "order_type": "LIMIT",
                "exec_type": "TRADE",
                "status": status,
                "price": px,
                "avg_price": px,
                "orig_qty": q,
                "filled_qty": q,
                "reduce_only": False,
            }
            for t, s, oid, side, q, px, status in orders
        ],
    )
    fills = [
        (101, t0 + 100, "BTCUSDT", 11, "BUY", "60000", "0.5", "12.0", "0"),
        (102, t0 + 1100, "ETHUSDT", 12, "SELL", "3000", "8", "9.6", "0"),
        (103, t0 + 2100, "SOLUSDT", 13, "BUY", "150", "20", "1.2", "0"),
        (104, t0 + 3100, "BTCUSDT", 14, "SELL", "60100", "0.25", "6.01", "25"),
    ]
    write_rows(
        paths,
        account,
        "fills",
        [
            {
                "trade_id": tid,
                "time_ms": t,
                "symbol": s,
                "order_id": oid,
                "side": side,
                "position_side": "BOTH",
                "price": px,
                "qty": q,
                "quote_qty": Decimal(px) * Decimal(q),
                "commission": fee,
                "commission_asset": "USDT",
                "realized_pnl": pnl,
                "maker": True,
            }
            for tid, t, s, oid, side, px, q, fee, pnl in fills
        ],
    )
    income = [
        (1, deposit_ms, "", "TRANSFER", "10000"),
        *[(10 + i, f[1], f[2], "COMMISSION", f"-{f[7]}") for i, f in enumerate(fills)],
        (20, t0 + 3100, "BTCUSDT", "REALIZED_PNL", "25"),
        (30, t0 + 5000, "BTCUSDT", "FUNDING_FEE", "1.5"),
        (31, t0 + 5000, "ETHUSDT", "FUNDING_FEE", "-2.25"),
    ]
    write_rows(
        paths,
        account,
        "income",
        [
            {"tran_id": i, "time_ms": t, "symbol": s, "income_type": k, "income": v, "asset": "USDT", "info": k}
            for i, t, s, k, v in income
        ],
    )
    update_equity_curve(paths, account, now_ms)  # as the watcher does after each full snapshot
    return Scenario(
        now_ms=now_ms,
        snapshot_times=times,
        equities=equities,
        deposit_ms=deposit_ms,
        deposit=10_000.0,
        fees=sum((Decimal(f[7]) for f in fills), Decimal(0)),
        funding_received=Decimal("1.5"),
        funding_paid=Decimal("-2.25"),
        last_snapshot_ms=last,
    )


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")
