"""What every panel of the web monitor shows: one function per panel, returning plain JSON-ready values.

This is the only module of the web app that knows where things are stored. It is a thin layer meant to call the
`monitoring` and `executors` packages; where their functions are not on main yet it reads their stored files
directly, each place marked `LEAD:` with the function that should replace it:

  data/run/state.json                         lsq.runstate (what `lsq run` started)
  data/collector/status.json                  collectors.status (the collector's heartbeat)
  data/monitoring/{account}/snapshots|positions|orders|fills|income/*.parquet, status.json
                                              read through monitoring.store.AccountStore
  data/monitoring/alerts.jsonl                the alert sensor's log, one JSON object a line
  data/positions/{account}_target_positions_*.json   through lsq.targets
  data/execution/{account}/halt.json          the kill switch: through executors.safety (read_halt, set_halt,
                                              clear_halt), as `lsq halt` / `lsq resume`
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl

from executors.journal import Journal, journal_path
from executors.safety import clear_halt, halt_file, read_halt
from executors.safety import set_halt as write_halt
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.runstate import part_state, pid_alive, read_state
from lsq.targets import TargetFile, TargetFileError, read_targets, target_files
from lsq.timelabels import DAY_MS, WINDOW_MS
from monitoring.store import AccountStore, Kind

HaltMode = Literal["halted", "reduce_only", "active"]
HALT_MODES: tuple[HaltMode, ...] = ("halted", "reduce_only", "active")
COLLECTOR_STALE_MS = 10_000
WATCHER_STALE_MS = 180_000  # the watcher snapshots at least every minute; three missed is an outage
MAX_CURVE_POINTS = 5_000


# --- files ------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _account_dir(paths: DataPaths, account_id: str) -> Path:
    return paths.root / "monitoring" / account_id


def _read_kind(paths: DataPaths, account_id: str, kind: Kind, start_ms: int | None = None) -> pl.DataFrame:
    """Rows of one kind of the account watcher's store from `start_ms` on, sorted by time."""
    return AccountStore(paths, account_id).read(kind, start_ms)


def _floats(frame: pl.DataFrame) -> pl.DataFrame:
    """Decimal money as Float64 for display and charts (the stored values stay exact)."""
    return frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def accounts(settings: Settings) -> list[str]:
    """Configured accounts of the current mode, then any other account with stored monitoring data."""
    ids = [a.account_id for a in settings.execution.accounts_for()]
    root = DataPaths(settings.data_dir).root / "monitoring"
    stored = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return ids + [i for i in stored if i not in ids]


# --- process status and system ----------------------------------------------------------------------------------


def _heartbeat(paths: DataPaths, name: str) -> tuple[int | None, str]:
    """The part's last heartbeat (ms) and a short detail, from what that part writes."""
    if name == "collector":
        status = _read_json(paths.collector_status) or {}
        conns = status.get("connections") or []
        up = sum(1 for c in conns if c.get("up"))
        sealed = (status.get("last_sealed_window") or {}).get("partition_key", "none")
        return status.get("updated_at"), f"{up}/{len(conns)} connections, last sealed {sealed}"
    if "watch" in name:  # the account watcher, however `lsq run` names it
        beats = [b for b in (_file_beat(d / "status.json") for d in _watcher_dirs(paths)) if b is not None]
        return (max(beats) if beats else None), f"{len(beats)} accounts"
    return None, ""


def _file_beat(path: Path) -> int | None:
    """A status file's `updated_ms` (the watcher's) or `updated_at` (the collector's), else when it was written."""
    status = _read_json(path)
    if status is None:
        return None
    beat = status.get("updated_ms", status.get("updated_at"))
    return beat if isinstance(beat, int) else path.stat().st_mtime_ns // 1_000_000


def _watcher_dirs(paths: DataPaths) -> Iterable[Path]:
    root = paths.root / "monitoring"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def process_status(settings: Settings, now_ms: int) -> dict[str, Any]:
    """Every part `lsq run` started (data/run/state.json) with its state and last heartbeat; the collector is also
    shown when started on its own (its heartbeat file exists)."""
    paths = DataPaths(settings.data_dir)
    try:
        state = read_state(paths) or {}
    except ValueError as exc:
        state = {"error": str(exc)}
    parts: list[dict[str, Any]] = []
    for part in state.get("parts", []):
        beat, detail = _heartbeat(paths, str(part.get("name")))
        parts.append(
            {
                "name": part.get("name"),
                "pid": part.get("pid"),
                "started_at": part.get("started_at"),
                "state": part_state(part),
                "heartbeat_ms": beat,
                "detail": detail,
            }
        )
    named = {p["name"] for p in parts}
    for name, status in (("collector", _read_json(paths.collector_status)),):
        if name not in named and status:
            beat, detail = _heartbeat(paths, name)
            alive = status.get("running") and pid_alive(status.get("pid"))
            parts.append(
                {
                    "name": name,
                    "pid": status.get("pid"),
                    "started_at": status.get("started_at"),
                    "state": "running" if alive else "stopped",
                    "heartbeat_ms": beat,
                    "detail": detail,
                }
            )
    for p in parts:
        stale_after = COLLECTOR_STALE_MS if p["name"] == "collector" else WATCHER_STALE_MS
        beat = p["heartbeat_ms"]
        if p["state"] == "running" and isinstance(beat, int) and now_ms - beat > stale_after:
            p["state"] = "stale"
    supervisor = {
        "pid": state.get("pid"),
        "started_at": state.get("started_at"),
        "running": bool(state.get("running")) and pid_alive(state.get("pid")),
        "error": state.get("error"),
    }
    return {"now_ms": now_ms, "supervisor": supervisor, "parts": parts, "pipeline": pipeline(settings, now_ms)}


def _newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return found[-1] if found else None


def pipeline(settings: Settings, now_ms: int) -> dict[str, Any]:
    """How far the pipeline has got: the newest sealed window marker and how long after its window end we are, and
    each account's newest target file (the last window run that reached sizing).

    LEAD: switch to monitoring's pipeline-health metrics (marker lag, last window run, last execution per account).
    """
    paths = DataPaths(settings.data_dir)
    day = _newest(paths.markers, "????-??-??")
    marker = _newest(day, "????.json") if day else None
    window_end = None
    if day and marker:
        start = datetime.strptime(f"{day.name} {marker.stem}", "%Y-%m-%d %H%M").replace(tzinfo=ZoneInfo("UTC"))
        window_end = int(start.timestamp() * 1000) + WINDOW_MS
    newest = {a: latest_targets(paths, a) for a in accounts(settings)}
    targets = {a: t.window_end_ms if t else None for a, t in newest.items()}
    return {
        "last_marker_window_end_ms": window_end,
        "marker_lag_ms": now_ms - window_end if window_end else None,
        "last_targets_ms": targets,
    }


def system(settings: Settings) -> dict[str, Any]:
    """CPU, memory and the disk that holds the data directory."""
    import psutil  # type: ignore[import-untyped]  # (no stubs shipped) here, so `lsq status` never pays for it

    data_dir = settings.data_dir
    probe = data_dir if data_dir.exists() else data_dir.parent
    disk = shutil.disk_usage(probe)
    memory = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "load_average": list(psutil.getloadavg()),
        "memory": {"total": memory.total, "used": memory.total - memory.available, "percent": memory.percent},
        "disk": {
            "path": str(data_dir),
            "total": disk.total,
            "used": disk.used,
            "free": disk.free,
            "percent": round(100 * disk.used / disk.total, 1) if disk.total else None,
        },
    }


# --- per account ------------------------------------------------------------------------------------------------


def _day_start_ms(settings: Settings, now_ms: int) -> int:
    """Midnight of the operator's day (data.timezone) that holds `now_ms`."""
    tz = ZoneInfo(settings.data.timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _transfers(income: pl.DataFrame) -> pl.DataFrame:
    if income.height == 0:
        return pl.DataFrame(schema={"time_ms": pl.Int64, "amount": pl.Float64})
    return income.filter(pl.col("income_type") == "TRANSFER").select(
        "time_ms", pl.col("income").cast(pl.Float64).alias("amount")
    )


def account_summary(settings: Settings, account_id: str, now_ms: int) -> dict[str, Any]:
    """Equity, available balance, margin ratio, today's PnL (equity change less today's transfers), halt state.

    LEAD: the latest snapshot should come from monitoring.store.AccountStore.latest().
    """
    paths = DataPaths(settings.data_dir)
    day_start = _day_start_ms(settings, now_ms)
    snaps = _floats(_read_kind(paths, account_id, "snapshots", day_start - DAY_MS))
    out: dict[str, Any] = {"account_id": account_id, "halt": halt_state(settings, account_id)}
    out["watcher_heartbeat_ms"] = _file_beat(_account_dir(paths, account_id) / "status.json")
    if snaps.height == 0:
        return {**out, "snapshot_ms": None}
    last = snaps.row(-1, named=True)
    before = snaps.filter(pl.col("time_ms") < day_start)
    opening = before.row(-1, named=True) if before.height else snaps.row(0, named=True)
    flows = _transfers(_floats(_read_kind(paths, account_id, "income", day_start)))
    flows = flows.filter(pl.col("time_ms") > opening["time_ms"])
    today_pnl = last["equity"] - opening["equity"] - float(flows["amount"].sum())
    return {
        **out,
        "snapshot_ms": last["time_ms"],
        "equity": last["equity"],
        "wallet_balance": last.get("wallet_balance"),
        "unrealized_pnl": last.get("unrealized_pnl"),
        "available_balance": last.get("available_balance"),
        "maint_margin": last.get("maint_margin"),
        "margin_ratio": last.get("margin_ratio"),
        "today_pnl": today_pnl,
        "day_start_ms": day_start,
    }


def latest_targets(paths: DataPaths, account_id: str) -> TargetFile | None:
    """The newest readable target file (lsq.targets); a bad file is skipped, so it cannot hide the one before."""
    for path in reversed(target_files(paths, account_id)):
        try:
            return read_targets(path)
        except TargetFileError:
            continue
    return None


def positions(settings: Settings, account_id: str) -> dict[str, Any]:
    """Held positions of the latest snapshot against the latest targets, with the deviation per symbol in notional
    at mark (|current − target| × mark) and its share of the target book's gross notional.

    LEAD: switch to monitoring.metrics.deviation_by_symbol / deviation_summary.
    """
    paths = DataPaths(settings.data_dir)
    held = _floats(_read_kind(paths, account_id, "positions"))
    at = int(held["time_ms"].max()) if held.height else None  # type: ignore[arg-type]
    if at is not None:
        held = (
            held.filter(pl.col("time_ms") == at)
            .group_by("symbol")
            .agg(
                pl.col("position_amt").sum().alias("current"),
                pl.col("mark_price").max(),
                pl.col("entry_price").first(),
                pl.col("unrealized_pnl").sum(),
            )
        )
    else:
        held = pl.DataFrame(
            schema={
                "symbol": pl.String,
                "current": pl.Float64,
                "mark_price": pl.Float64,
                "entry_price": pl.Float64,
                "unrealized_pnl": pl.Float64,
            }
        )
    doc = latest_targets(paths, account_id)
    wanted = pl.DataFrame(
        [
            {"symbol": p.symbol, "target": float(p.target_position), "decision_price": float(p.price)}
            for p in (doc.positions if doc else ())
        ],
        schema={"symbol": pl.String, "target": pl.Float64, "decision_price": pl.Float64},
    )
    joined = held.join(wanted, on="symbol", how="full", coalesce=True)
    price = pl.coalesce(
        pl.when(pl.col("mark_price") > 0).then(pl.col("mark_price")),
        pl.when(pl.col("decision_price") > 0).then(pl.col("decision_price")),
    )
    table = (
        joined.with_columns(pl.col("current", "target").fill_null(0.0), price.alias("price"))
        .filter((pl.col("current") != 0) | (pl.col("target") != 0))
        .with_columns(
            (pl.col("current") * pl.col("price")).alias("current_notional"),
            (pl.col("target") * pl.col("price")).alias("target_notional"),
            ((pl.col("current") - pl.col("target")).abs() * pl.col("price")).alias("deviation_notional"),
        )
    )
    gross = float(table["target_notional"].abs().sum()) if table.height else 0.0
    table = table.with_columns(
        (pl.col("deviation_notional") / gross if gross > 0 else pl.lit(None, pl.Float64)).alias("deviation_share")
    ).sort("deviation_notional", descending=True, nulls_last=True)
    total = float(table["deviation_notional"].sum()) if table.height else 0.0
    snaps = _read_kind(paths, account_id, "snapshots", at) if at is not None else pl.DataFrame()
    equity = float(snaps.filter(pl.col("time_ms") == at)["equity"].cast(pl.Float64).sum()) if snaps.height else 0.0
    return {
        "account_id": account_id,
        "exposure": _exposure(held.select("symbol", (pl.col("current") * pl.col("mark_price")).alias("n")), equity),
        "snapshot_ms": at,
        "targets_ms": doc.window_end_ms if doc else None,
        "targets_file": doc.path.name if doc and doc.path else None,
        "target_gross_notional": gross,
        "deviation_notional": total,
        "deviation_share": total / gross if gross > 0 else None,
        "rows": _rows(
            table.select(
                "symbol",
                "current",
                "target",
                "price",
                "current_notional",
                "target_notional",
                "deviation_notional",
                "deviation_share",
                "entry_price",
                "unrealized_pnl",
            )
        ),
    }


def _exposure(notional: pl.DataFrame, equity: float) -> dict[str, float | None]:
    """Gross, net, long, short at mark, the largest symbol's share of gross, leverage (gross / equity).

    LEAD: switch to monitoring.metrics.exposure.
    """
    n = notional["n"].fill_null(0.0)
    gross = float(n.abs().sum())
    return {
        "gross": gross,
        "net": float(n.sum()),
        "long": float(n.clip(lower_bound=0).sum()),
        "short": float(n.clip(upper_bound=0).sum()),
        "largest_share": float(n.abs().max()) / gross if gross > 0 else None,  # type: ignore[arg-type]
        "leverage": gross / equity if equity > 0 else None,
    }


def _recent(settings: Settings, account_id: str, kind: Kind, limit: int, days: int) -> list[dict[str, Any]]:
    paths = DataPaths(settings.data_dir)
    folder = _account_dir(paths, account_id) / kind
    files = sorted(folder.glob("*.parquet"))[-days:] if folder.is_dir() else []
    if not files:
        return []
    frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return _rows(frame.sort("time_ms", descending=True).head(limit))


def executions(settings: Settings, account_id: str, now_ms: int, limit: int = 50) -> dict[str, Any]:
    """The executor's journal: its newest runs (window, algorithm, status) and the child orders it placed over the
    last day, newest first, with exact quantities and prices. Nothing is created when there is no journal yet."""
    path = journal_path(DataPaths(settings.data_dir), account_id)
    if not path.exists():
        return {"runs": [], "orders": []}
    with Journal(path) as journal:
        runs = journal.runs(10)
        children = journal.children(since_ms=now_ms - DAY_MS)
    newest = sorted(children, key=lambda c: (c.updated_ms, c.client_id), reverse=True)[:limit]
    return {"runs": runs, "orders": [{k: _jsonable(v) for k, v in asdict(c).items()} for c in newest]}


def orders(settings: Settings, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest order events the account watcher stored from the user data stream."""
    return _recent(settings, account_id, "orders", limit, days=3)


def fills(settings: Settings, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest fills, exact prices and quantities as strings."""
    return _recent(settings, account_id, "fills", limit, days=2)


def equity_curve(settings: Settings, account_id: str, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    """Equity samples with the time-weighted return index and drawdown; a transfer is capital, not return:
    r = E1 / (E0 + F) − 1 with F the transfers booked in (t0, t1].

    LEAD: switch to monitoring.equity.equity_curve / in_range / summarize (minute samples, stored curve).
    """
    paths = DataPaths(settings.data_dir)
    snaps = _floats(_read_kind(paths, account_id, "snapshots", start_ms))
    if end_ms is not None and snaps.height:
        snaps = snaps.filter(pl.col("time_ms") < end_ms)
    if snaps.height == 0:
        return {"account_id": account_id, "time_ms": [], "equity": [], "drawdown": [], "max_drawdown": None}
    flows = _transfers(_floats(_read_kind(paths, account_id, "income", start_ms)))
    cum = flows.sort("time_ms").with_columns(pl.col("amount").cum_sum().alias("cum_flow")).select("time_ms", "cum_flow")
    curve = (
        snaps.select("time_ms", "equity")
        .sort("time_ms")
        .join_asof(cum, on="time_ms", strategy="backward")
        .with_columns(pl.col("cum_flow").fill_null(0.0))
        .with_columns((pl.col("cum_flow") - pl.col("cum_flow").shift(1)).fill_null(0.0).alias("flow"))
        .with_columns(
            pl.when((pl.col("equity").shift(1) + pl.col("flow")) > 0)
            .then(pl.col("equity") / (pl.col("equity").shift(1) + pl.col("flow")) - 1)
            .otherwise(0.0)
            .fill_null(0.0)
            .alias("ret")
        )
        .with_columns((pl.col("ret") + 1).cum_prod().alias("wealth"))
        .with_columns((pl.col("wealth") / pl.col("wealth").cum_max() - 1).alias("drawdown"))
    )
    step = max(1, math.ceil(curve.height / MAX_CURVE_POINTS))
    shown = curve.gather_every(step) if step > 1 else curve
    return {
        "account_id": account_id,
        "time_ms": shown["time_ms"].to_list(),
        "equity": shown["equity"].to_list(),
        "drawdown": shown["drawdown"].to_list(),
        "cumulative_return": float(curve["wealth"][-1] - 1),
        "max_drawdown": float(curve["drawdown"].min()),  # type: ignore[arg-type]
        "net_transfers": float(flows["amount"].sum()),
    }


def strategy_report(settings: Settings, account_id: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Turnover, fees, funding paid and received and realized PnL by symbol, measured from the stored fills and
    income records (never assumed rates).

    LEAD: switch to monitoring's strategy report once on main (it adds implementation shortfall per window and
    tracking error, which need the target files and arrival marks).
    """
    paths = DataPaths(settings.data_dir)
    fill_rows = _floats(_read_kind(paths, account_id, "fills", start_ms))
    income = _floats(_read_kind(paths, account_id, "income", start_ms))
    if fill_rows.height:
        fill_rows = fill_rows.filter(pl.col("time_ms") < end_ms)
    if income.height:
        income = income.filter(pl.col("time_ms") < end_ms)
    traded = (
        fill_rows.group_by("symbol").agg(
            pl.len().alias("fills"),
            pl.col("quote_qty").sum().alias("turnover"),
            pl.col("commission").sum().alias("fees_paid"),
        )
        if fill_rows.height
        else pl.DataFrame(
            schema={"symbol": pl.String, "fills": pl.UInt32, "turnover": pl.Float64, "fees_paid": pl.Float64}
        )
    )
    by_type = (
        income.filter(pl.col("symbol").is_not_null() & (pl.col("symbol") != ""))
        .group_by("symbol")
        .agg(
            pl.col("income").filter(pl.col("income_type") == "REALIZED_PNL").sum().alias("realized_pnl"),
            pl.col("income").filter(pl.col("income_type") == "COMMISSION").sum().alias("commission_income"),
            pl.col("income")
            .filter((pl.col("income_type") == "FUNDING_FEE") & (pl.col("income") > 0))
            .sum()
            .alias("funding_received"),
            pl.col("income")
            .filter((pl.col("income_type") == "FUNDING_FEE") & (pl.col("income") < 0))
            .sum()
            .alias("funding_paid"),
        )
        if income.height
        else pl.DataFrame(
            schema={
                "symbol": pl.String,
                "realized_pnl": pl.Float64,
                "commission_income": pl.Float64,
                "funding_received": pl.Float64,
                "funding_paid": pl.Float64,
            }
        )
    )
    table = (
        traded.join(by_type, on="symbol", how="full", coalesce=True)
        .with_columns(pl.all().exclude("symbol").fill_null(0))
        .with_columns(
            (
                pl.col("realized_pnl")
                + pl.col("commission_income")
                + pl.col("funding_received")
                + pl.col("funding_paid")
            ).alias("net_pnl")
        )
        .sort("symbol")
    )
    totals = {c: float(table[c].sum()) for c in table.columns if c not in ("symbol", "fills")}
    totals["fills"] = int(table["fills"].sum()) if table.height else 0
    transfers = float(_transfers(income)["amount"].sum())
    return {
        "account_id": account_id,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "totals": {**totals, "transfers": transfers},
        "by_symbol": _rows(table),
    }


def report_csv(report: dict[str, Any]) -> str:
    rows = report["by_symbol"]
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def report_range(settings: Settings, day: str | None, now_ms: int) -> tuple[int, int]:
    """A report's [start, end): the operator's day `day` (YYYY-MM-DD, data.timezone), today by default."""
    tz = ZoneInfo(settings.data.timezone)
    if day is None:
        start = _day_start_ms(settings, now_ms)
    else:
        start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=tz).timestamp() * 1000)
    return start, start + DAY_MS


# --- alerts -----------------------------------------------------------------------------------------------------


def alerts(settings: Settings, now_ms: int, limit: int = 100) -> dict[str, Any]:
    """The alert log (newest first) and what is wrong right now: parts down or stale, halted accounts.

    LEAD: the log is read from data/monitoring/alerts.jsonl; switch to the alert sensor's store once on main.
    """
    path = DataPaths(settings.data_dir).root / "monitoring" / "alerts.jsonl"
    log: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines()[-limit:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                log.append(entry)
    log.reverse()
    active: list[dict[str, Any]] = []
    for part in process_status(settings, now_ms)["parts"]:
        if part["state"] not in ("running", "finished"):
            active.append({"severity": "ERROR", "source": part["name"], "message": f"{part['name']} {part['state']}"})
    for account_id in accounts(settings):
        mode = halt_state(settings, account_id)["mode"]
        if mode != "active":
            active.append({"severity": "WARN", "source": account_id, "message": f"{account_id} is {mode}"})
    return {"active": active, "log": log}


# --- kill switch ------------------------------------------------------------------------------------------------


def _halt_path(settings: Settings, account_id: str) -> Path:
    return halt_file(DataPaths(settings.data_dir), account_id)


def halt_state(settings: Settings, account_id: str) -> dict[str, Any]:
    """The account's kill switch as the executor reads it before every child order: halted, reduce_only or active
    (an unreadable switch file counts as a full halt)."""
    state = read_halt(DataPaths(settings.data_dir), account_id)
    if state is None:
        return {"mode": "active", "since_ms": None, "reason": None}
    return {
        "mode": "halted" if state.mode == "halt" else state.mode,
        "since_ms": state.since_ms,
        "reason": state.reason,
    }


def set_halt(settings: Settings, account_id: str, mode: HaltMode, now_ms: int, by: str) -> dict[str, Any]:
    """Halt, set reduce-only or resume an account, as `lsq halt ACCOUNT [--reduce-only]` / `lsq resume ACCOUNT`
    do: the executors' switch functions, and on a full halt our resting orders are cancelled at once.

    The answer adds `cancelled` (our open orders cancelled now) or `cancel_error` (the switch is set whatever the
    exchange said: the executor sends nothing more either way).
    """
    if account_id not in accounts(settings):
        raise KeyError(account_id)
    paths = DataPaths(settings.data_dir)
    extra: dict[str, Any] = {}
    if mode == "active":
        clear_halt(paths, account_id)
    else:
        write_halt(paths, account_id, "halt" if mode == "halted" else "reduce_only", f"from the {by}", now_ms)
        if mode == "halted":
            try:
                extra["cancelled"] = cancel_our_orders(settings, account_id, now_ms)
            except Exception as exc:  # the exchange unreachable or the account without keys: the switch holds
                extra["cancel_error"] = f"{type(exc).__name__}: {exc}"
    return {**halt_state(settings, account_id), **extra}


def cancel_our_orders(settings: Settings, account_id: str, now_ms: int) -> int:
    """Cancel our resting orders now (others are left alone), through the executor's reconciliation.

    LEAD: this repeats executors/cli.py's `_cancel_ours` (which takes a config path and prints); one executors
    function `halt_account(settings, account, mode, reason, clock)` used by both `lsq halt` and this would be the
    single path.
    """
    from executors.reconcile import reconcile
    from executors.router import OrderRouter
    from lsq.clock import SYSTEM_CLOCK
    from lsq.exchange import account_client

    client = account_client(settings, account_id)
    with Journal(journal_path(DataPaths(settings.data_dir), account_id)) as journal:
        router = OrderRouter(account_id, client, journal, SYSTEM_CLOCK, "halt", 0)
        return len(reconcile(client, journal, router, now_ms, dry_run=False).cancelled)


# --- change detection for the event stream ----------------------------------------------------------------------


def fingerprints(settings: Settings) -> dict[str, tuple[int, ...]]:
    """A cheap signature per panel (and per account): mtimes of the files and folders it reads. Every store writes
    by atomic rename, which also changes the folder's mtime, so a stat of the folders sees every new write."""
    paths = DataPaths(settings.data_dir)

    def stamp(*items: Path) -> tuple[int, ...]:
        out = []
        for item in items:
            try:
                out.append(item.stat().st_mtime_ns)
            except OSError:
                out.append(0)
        return tuple(out)

    run_state = paths.root / "run" / "state.json"
    prints = {
        "status": stamp(run_state, paths.collector_status),
        "alerts": stamp(paths.root / "monitoring" / "alerts.jsonl", run_state, paths.collector_status),
    }
    for account_id in accounts(settings):
        folder = _account_dir(paths, account_id)
        halt = _halt_path(settings, account_id)
        prints[f"account:{account_id}"] = stamp(folder / "snapshots", folder / "income", halt.parent, halt)
        prints[f"positions:{account_id}"] = stamp(folder / "positions", paths.positions)
        journal = journal_path(paths, account_id)
        prints[f"orders:{account_id}"] = stamp(
            folder / "orders", folder / "fills", journal, journal.with_name(journal.name + "-wal")
        )
        prints["alerts"] += stamp(halt)
    return prints
