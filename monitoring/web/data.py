"""What every panel of the web monitor shows: one function per panel, returning plain JSON-ready values.

This is the only module of the web app that knows where things are stored; the figures are the `monitoring`
package's (account_view, account_curve, account_report, pipeline_health), the kill switch the `executors`'
(killswitch.halt_account, the same path as `lsq halt`). What it reads:

  data/run/state.json                         lsq.runstate (what `lsq run` started)
  data/collector/status.json, markers/        monitoring.pipeline.pipeline_health
  data/monitoring/{account}/...               monitoring.state / monitoring.report / monitoring.store.AccountStore
  data/monitoring/alerts.json                 the Dagster alert sensor's alert book (its `recent` alerts)
  data/positions/{account}_target_positions_*.json   through lsq.targets (the last window run that reached sizing)
  data/execution/{account}/halt.json, journal.sqlite  through executors.safety / executors.journal
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl

from executors.journal import Journal, journal_path
from executors.killswitch import halt_account
from executors.safety import clear_halt, halt_file, read_halt
from lsq.clock import Clock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.runstate import part_state, pid_alive, read_state
from lsq.targets import TargetFile, TargetFileError, read_targets, target_files
from lsq.timelabels import DAY_MS
from monitoring.equity import equity_curve, in_range, summarize
from monitoring.metrics import deviation_by_symbol
from monitoring.pipeline import pipeline_health
from monitoring.report import StrategyReport, account_report
from monitoring.state import account_curve, account_view
from monitoring.store import AccountStore, Kind

HaltMode = Literal["halted", "reduce_only", "active"]
HALT_MODES: tuple[HaltMode, ...] = ("halted", "reduce_only", "active")
REPORT_TABLES = ("by_symbol", "daily", "windows", "window_deviation")  # the CSV tables of a StrategyReport
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


def _heartbeat(name: str, health: dict[str, Any]) -> tuple[int | None, str | None, str]:
    """The part's last heartbeat (ms), its liveness as monitoring.pipeline judges it (None when it has no
    heartbeat of its own) and a short detail."""
    if name == "collector":
        collector = health["collector"]
        conns = collector["detail"].get("connections") or []
        up = sum(1 for c in conns if c.get("up"))
        sealed = (collector["detail"].get("last_sealed_window") or {}).get("partition_key", "none")
        return collector["updated_ms"], collector["state"], f"{up}/{len(conns)} connections, last sealed {sealed}"
    if "watch" in name:  # the account watcher, however `lsq run` names it
        watchers = [w for w in health["watchers"].values() if w["updated_ms"] is not None]
        beat = max((w["updated_ms"] for w in watchers), default=None)
        live = "running" if any(w["state"] == "running" for w in watchers) else "stale" if watchers else None
        return beat, live, f"{len(watchers)} accounts"
    return None, None, ""


def _part(name: Any, pid: Any, started_at: Any, state: str, health: dict[str, Any]) -> dict[str, Any]:
    beat, live, detail = _heartbeat(str(name), health)
    if state == "running" and live == "stale":
        state = "stale"
    return {"name": name, "pid": pid, "started_at": started_at, "state": state, "heartbeat_ms": beat, "detail": detail}


def process_status(settings: Settings, now_ms: int) -> dict[str, Any]:
    """Every part `lsq run` started (data/run/state.json) with its state and last heartbeat; the collector is also
    shown when started on its own (its heartbeat file exists). Liveness is monitoring.pipeline's."""
    paths = DataPaths(settings.data_dir)
    try:
        state = read_state(paths) or {}
    except ValueError as exc:
        state = {"error": str(exc)}
    health = pipeline_health(paths, accounts(settings), now_ms)
    parts = [
        _part(p.get("name"), p.get("pid"), p.get("started_at"), part_state(p), health) for p in state.get("parts", [])
    ]
    collector = health["collector"]
    if "collector" not in {p["name"] for p in parts} and collector["state"] != "missing":
        alone = "running" if collector["state"] == "stale" else collector["state"]  # _part marks it stale
        parts.append(
            _part("collector", collector["detail"].get("pid"), collector["detail"].get("started_at"), alone, health)
        )
    supervisor = {
        "pid": state.get("pid"),
        "started_at": state.get("started_at"),
        "running": bool(state.get("running")) and pid_alive(state.get("pid")),
        "error": state.get("error"),
    }
    newest = {a: latest_targets(paths, a) for a in accounts(settings)}
    pipeline = {**health, "last_targets_ms": {a: t.window_end_ms if t else None for a, t in newest.items()}}
    return {"now_ms": now_ms, "supervisor": supervisor, "parts": parts, "pipeline": pipeline}


def system(settings: Settings) -> dict[str, Any]:
    """CPU, memory and the disk that holds the data directory."""
    import psutil  # here, so `lsq status` never pays for it

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


def _today_pnl(store: AccountStore, day_start_ms: int) -> float:
    """PnL since the operator's midnight: the equity curve (monitoring.equity, transfers taken out) from the last
    snapshot before midnight, or the day's first, to the newest one."""
    snaps = store.read("snapshots", day_start_ms - DAY_MS)
    before = snaps.filter(pl.col("time_ms") < day_start_ms)
    opening = int(before["time_ms"].max() if before.height else snaps["time_ms"].min())  # type: ignore[arg-type]
    curve = equity_curve(snaps.filter(pl.col("time_ms") >= opening), store.read("income", opening))
    return summarize(curve).pnl


def account_summary(settings: Settings, account_id: str, now_ms: int) -> dict[str, Any]:
    """monitoring.state.account_view's snapshot, health and drawdown, today's PnL and the halt state."""
    paths = DataPaths(settings.data_dir)
    view = account_view(paths, account_id)
    out: dict[str, Any] = {"account_id": account_id, "halt": halt_state(settings, account_id)}
    status = view.watcher if view else AccountStore(paths, account_id).read_status()
    out["watcher_heartbeat_ms"] = (status or {}).get("updated_ms")
    if view is None:
        return {**out, "snapshot_ms": None}
    snap = view.snapshot
    day_start = _day_start_ms(settings, now_ms)
    return {
        **out,
        "snapshot_ms": int(snap["time_ms"]),
        **{
            k: float(snap[k])
            for k in ("equity", "wallet_balance", "unrealized_pnl", "available_balance", "maint_margin")
        },
        "margin_ratio": view.health.margin_ratio,
        "drawdown": view.drawdown,
        "today_pnl": _today_pnl(AccountStore(paths, account_id), day_start),
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
    """The latest snapshot's positions against the targets in force (monitoring.state.account_view: deviation by
    symbol and in total, exposure), with each symbol's entry price and unrealized PnL; symbols neither held nor
    targeted are left out."""
    view = account_view(DataPaths(settings.data_dir), account_id)
    if view is None:
        return {"snapshot_ms": None, "exposure": None, "targets_ms": None, "deviation": None, "rows": []}
    held = view.positions.with_columns(pl.col(pl.Decimal).cast(pl.Float64))
    by_symbol = view.deviation_by_symbol
    if by_symbol.height == 0:  # no targets yet: what is held, against nothing
        by_symbol = deviation_by_symbol(held, pl.DataFrame(schema={"symbol": pl.String, "target_position": pl.Float64}))
    extra = held.group_by("symbol").agg(pl.col("entry_price").first(), pl.col("unrealized_pnl").sum())
    rows = (
        by_symbol.join(extra, on="symbol", how="left")
        .filter((pl.col("current") != 0) | (pl.col("target") != 0))
        .sort("deviation_notional", descending=True, nulls_last=True)
    )
    return {
        "snapshot_ms": int(view.snapshot["time_ms"]),
        "exposure": view.exposure.as_dict(),
        "targets_ms": view.target_ms,
        "deviation": view.deviation.as_dict() if view.deviation else None,
        "rows": _rows(
            rows.select(
                "symbol",
                "current",
                "target",
                "price",
                "current_notional",
                "target_notional",
                "deviation_notional",
                "share_of_target_gross",
                "entry_price",
                "unrealized_pnl",
            )
        ),
    }


def _recent(
    settings: Settings, account_id: str, kind: Kind, now_ms: int, days: int, limit: int
) -> list[dict[str, Any]]:
    """The newest `limit` rows of the last `days`, newest first (through the store: each file read once)."""
    frame = AccountStore(DataPaths(settings.data_dir), account_id).read(kind, now_ms - days * DAY_MS)
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


def orders(settings: Settings, account_id: str, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
    """The newest order events of the last three days the account watcher stored from the user data stream."""
    return _recent(settings, account_id, "orders", now_ms, 3, limit)


def fills(settings: Settings, account_id: str, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
    """The newest fills of the last 31 days, exact prices and quantities as strings."""
    return _recent(settings, account_id, "fills", now_ms, 31, limit)


def equity(settings: Settings, account_id: str, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    """The stored minute curve over [start_ms, end_ms) (monitoring.state.account_curve), rebased to the range so
    the drawdown chart and the summary agree; thinned to MAX_CURVE_POINTS for the chart."""
    curve, summary = account_curve(DataPaths(settings.data_dir), account_id, start_ms, end_ms)
    part = in_range(curve)
    step = max(1, math.ceil(part.height / MAX_CURVE_POINTS))
    shown = part.gather_every(step) if step > 1 else part
    return {
        "account_id": account_id,
        "time_ms": shown["minute_ms"].to_list(),
        "equity": shown["equity"].to_list(),
        "drawdown": shown["drawdown"].to_list(),
        "summary": {k: _jsonable(v) for k, v in summary.items()},
    }


def report(settings: Settings, account_id: str, start_ms: int, end_ms: int) -> StrategyReport:
    """monitoring.report.account_report: PnL by symbol and day, implementation shortfall per window, tracking
    error."""
    return account_report(DataPaths(settings.data_dir), account_id, start_ms, end_ms)


def report_range(settings: Settings, day: str | None, now_ms: int) -> tuple[int, int]:
    """A report's [start, end): the operator's day `day` (YYYY-MM-DD, data.timezone), today by default."""
    tz = ZoneInfo(settings.data.timezone)
    if day is None:
        start = _day_start_ms(settings, now_ms)
    else:
        start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=tz).timestamp() * 1000)
    return start, start + DAY_MS


# --- alerts -----------------------------------------------------------------------------------------------------


def _alert_book(paths: DataPaths) -> Path:
    return paths.monitoring / "alerts.json"


def alerts(settings: Settings, now_ms: int, limit: int = 100) -> dict[str, Any]:
    """The alerts the Dagster alert sensor sent (the `recent` list of its alert book, data/monitoring/alerts.json:
    {key, state, severity, title, text, time_ms, account, details}), newest first, and what is wrong right now:
    parts down or stale, halted accounts."""
    book = _read_json(_alert_book(DataPaths(settings.data_dir))) or {}
    recent = book.get("recent")
    log = [a for a in recent[-limit:] if isinstance(a, dict)] if isinstance(recent, list) else []
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


def set_halt(settings: Settings, account_id: str, mode: HaltMode, clock: Clock, by: str) -> dict[str, Any]:
    """Halt, set reduce-only or resume an account through the same functions as `lsq halt ACCOUNT [--reduce-only]`
    / `lsq resume ACCOUNT` (executors.killswitch.halt_account, executors.safety.clear_halt): on a full halt our
    resting orders are cancelled at once.

    The answer adds `cancelled` (our open orders cancelled now) or `cancel_error` (the switch is set whatever the
    exchange said: the executor sends nothing more either way).
    """
    if account_id not in accounts(settings):
        raise KeyError(account_id)
    extra: dict[str, Any] = {}
    if mode == "active":
        clear_halt(DataPaths(settings.data_dir), account_id)
    else:
        outcome = halt_account(
            settings, account_id, "halt" if mode == "halted" else "reduce_only", f"from the {by}", clock
        )
        if outcome.cancelled is not None:
            extra["cancelled"] = outcome.cancelled
        if outcome.cancel_error is not None:
            extra["cancel_error"] = outcome.cancel_error
    return {**halt_state(settings, account_id), **extra}


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
        "alerts": stamp(_alert_book(paths), run_state, paths.collector_status),
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
