"""The alpha engine: run every calculator on one shared view, isolate failures, combine into one alpha.

Concurrency (`strategy.alpha.concurrency`):
- thread (default): calculators run in daemon threads sharing the view (Polars releases the GIL in its kernels).
  A calculator past its timeout is recorded as failed and no longer waited for; Python cannot kill a thread, so it
  runs on in the background until it returns.
- process: worker processes (forkserver, Polars preloaded) map the view's panels from Arrow IPC files written once
  per run to shared memory. A calculator past its timeout has its worker killed; the timeout counts from the moment
  the calculator starts, not from the worker's start-up (STARTUP_SECONDS). Workers are capped at the CPU count:
  more processes than cores only add start-up time.
- none: one after the other in the calling thread (for debugging); a calculator that overran its timeout is still
  recorded as failed, so all three modes give the same alpha.

Combination: each successful vector is cleaned (non-finite values and symbols outside the view's universe dropped),
scaled to Σ|w| = 1 so the configured weight alone sets its influence, multiplied by its weight (default 1.0) and
summed; the sum is normalised to Σ|w| = 1. An all-zero sum gives an empty alpha with a note saying so. A calculator
whose every weight is dropped has status "empty" (not "ok"), with the reason; one that returns no weights at all
(e.g. too little history for its lookback) is "ok" with an empty vector: it chose no position.

Outcomes also say what the calculators could not: the history the view actually held (`HistoryCoverage`, short after
a fresh start), and calculators skipped for a cool-down after repeated timeouts (factors.health).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.data_view import AlphaDataView
from factors.health import CalculatorHealth, health_file
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import AlphaSettings, StrategySettings
from lsq.paths import DataPaths, atomic_write_bytes, atomic_write_text
from lsq.stores.factor_panel import strategy_name
from lsq.timelabels import DAY_MS, label_of, to_datetime

log = logging.getLogger(__name__)

Status = Literal["ok", "failed", "timeout", "empty", "skipped"]
WEIGHTS_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "weight": pl.Float64()}


class AlphaRunError(RuntimeError):
    """Too few calculators succeeded to trust an alpha. `result` still holds every run for the record."""

    def __init__(self, message: str, result: AlphaResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class HistoryCoverage:
    """How much trailing history the calculators got, against `strategy.history_days` asked for."""

    days_asked: int
    days_available: float
    first_ms: int | None

    @property
    def short(self) -> bool:
        return self.days_available < self.days_asked

    def as_dict(self) -> dict[str, Any]:
        return {
            "days_asked": self.days_asked,
            "days_available": self.days_available,
            "first_ms": self.first_ms,
            "short": self.short,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HistoryCoverage:
        return cls(int(raw["days_asked"]), float(raw["days_available"]), raw.get("first_ms"))

    def __str__(self) -> str:
        return f"{self.days_available:g} of {self.days_asked} days of history"

    def note(self) -> str:
        """What a short history means and the one command that fills it (`lsq backfill --history`)."""
        return f"calculators saw {self} (strategy.history_days): run `lsq backfill --history` to fill the history"


def history_coverage(view: AlphaDataView) -> HistoryCoverage:
    """Days from the first bar in the view to the window's end (whole days are exact: 5-minute bars tile them)."""
    first = view.bars_panel.get_column("open_time").min() if view.bars_panel.height else None
    if first is None:
        return HistoryCoverage(view.history_days, 0.0, None)
    first_ms = int(first)  # type: ignore[arg-type]  # Polars types min() as any literal; open_time is Int64
    return HistoryCoverage(view.history_days, round((view.end_ms - first_ms) / DAY_MS, 3), first_ms)


@dataclass(frozen=True)
class CalculatorRun:
    """One calculator's outcome: its cleaned vector (raw scale) or why it has none, and the history it saw."""

    name: str
    status: Status
    seconds: float
    weights: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=WEIGHTS_SCHEMA))
    error: str | None = None
    traceback: str | None = None
    dropped: int = 0
    history: HistoryCoverage | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class AlphaResult:
    """Per-calculator vectors, timings and failures, and the combined alpha [symbol, weight] with Σ|w| = 1."""

    window_ms: int
    runs: tuple[CalculatorRun, ...]
    alpha: pl.DataFrame
    weights: dict[str, float]
    note: str = ""
    compute_seconds: float = 0.0
    concurrency: str = "none"

    @property
    def failures(self) -> dict[str, str]:
        return {r.name: r.error or r.status for r in self.runs if not r.ok}

    @property
    def success_ratio(self) -> float:
        return sum(r.ok for r in self.runs) / len(self.runs) if self.runs else 0.0

    @property
    def timings(self) -> dict[str, float]:
        return {r.name: r.seconds for r in self.runs}

    @property
    def history(self) -> HistoryCoverage | None:
        """The history the calculators saw (one view per run, so the same for all)."""
        return next((r.history for r in self.runs if r.history is not None), None)

    def alpha_dict(self) -> dict[str, float]:
        return dict(zip(self.alpha["symbol"].to_list(), self.alpha["weight"].to_list(), strict=True))


# Cleaning and combination (pure)


def clean_weights(output: object, universe: Sequence[str]) -> tuple[pl.DataFrame, int]:
    """A calculator's output as [symbol (btc-usdt), weight] with only finite weights of universe symbols.

    Returns the frame and how many entries were dropped. Raises TypeError/ValueError for output that is not weights.
    """
    if isinstance(output, Mapping):
        frame = pl.DataFrame(
            {"symbol": [str(k) for k in output], "weight": list(output.values())}, schema_overrides=WEIGHTS_SCHEMA
        )
    elif isinstance(output, pl.DataFrame):
        missing = {"symbol", "weight"} - set(output.columns)
        if missing:
            raise ValueError(f"returned a frame without columns {sorted(missing)} (has {output.columns})")
        frame = output.select(pl.col("symbol").cast(pl.String), pl.col("weight"))
    else:
        raise TypeError(f"returned {type(output).__name__}; expected dict[str, float] or a frame [symbol, weight]")
    try:
        frame = frame.with_columns(pl.col("weight").cast(pl.Float64))
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"weights are not numbers: {exc}") from None
    members = set(universe)
    names = {s: _known(s, members) for s in frame["symbol"].unique().to_list()}
    frame = frame.with_columns(pl.col("symbol").replace_strict(names, return_dtype=pl.String, default=None))
    duplicated = frame.filter(pl.col("symbol").is_not_null() & pl.col("symbol").is_duplicated())
    if duplicated.height:
        raise ValueError(f"returned symbols more than once: {sorted(set(duplicated['symbol'].to_list()))[:5]}")
    kept = frame.filter(pl.col("symbol").is_not_null() & pl.col("weight").is_finite()).sort("symbol")
    return kept, frame.height - kept.height


def _known(symbol: str | None, members: set[str]) -> str | None:
    """The strategy name of `symbol` if it is in the universe, else None."""
    try:
        name = strategy_name(symbol) if symbol is not None else None
    except ValueError:
        return None
    return name if name in members else None


def combine(
    runs: Sequence[CalculatorRun],
    universe: Sequence[str],
    weights: Mapping[str, float],
    window_ms: int,
    min_success_ratio: float,
    concurrency: str = "none",
    compute_seconds: float = 0.0,
) -> AlphaResult:
    """Weighted sum of the successful vectors (each scaled to Σ|w| = 1), normalised to Σ|w| = 1.

    Accumulates in a fixed order with numpy, so the alpha does not depend on which calculator finished first.
    Raises AlphaRunError when the share of successful calculators is below `min_success_ratio`.
    """
    applied = {r.name: float(weights.get(r.name, 1.0)) for r in runs}
    symbols = sorted(set(universe))
    index = {s: i for i, s in enumerate(symbols)}
    acc = np.zeros(len(symbols))
    for run in sorted((r for r in runs if r.ok), key=lambda r: r.name):
        w = run.weights["weight"].to_numpy()
        peak = np.abs(w).max() if len(w) else 0.0
        if peak == 0 or applied[run.name] == 0:
            continue
        w = w / peak  # first to |w| ≤ 1, so Σ|w| cannot overflow for finite weights as large as 1e308
        total = np.abs(w).sum()
        idx = np.fromiter((index[s] for s in run.weights["symbol"].to_list()), dtype=np.int64, count=len(w))
        np.add.at(acc, idx, w * (applied[run.name] / total))
    gross = np.abs(acc).sum()
    keep = acc != 0
    note = ""
    if gross == 0 or not math.isfinite(gross):
        note = "all-zero alpha: the successful calculators' weighted vectors sum to zero; no positions"
        alpha = pl.DataFrame(schema=WEIGHTS_SCHEMA)
    else:
        alpha = pl.DataFrame(
            {"symbol": np.asarray(symbols, dtype=object)[keep].tolist(), "weight": acc[keep] / gross},
            schema=WEIGHTS_SCHEMA,
        )
    result = AlphaResult(window_ms, tuple(runs), alpha, applied, note, compute_seconds, concurrency)
    if not runs:
        raise AlphaRunError("no calculators to run: nothing was discovered or enabled", result)
    if result.success_ratio < min_success_ratio:
        failed = "; ".join(f"{k}: {v}" for k, v in result.failures.items())
        raise AlphaRunError(
            f"only {sum(r.ok for r in runs)}/{len(runs)} calculators succeeded "
            f"(< min_success_ratio {min_success_ratio}); failed: {failed}",
            result,
        )
    return result


# Running one calculator


@dataclass(frozen=True)
class _Outcome:
    index: int
    seconds: float
    output: object = None
    error: str | None = None
    traceback: str | None = None


def _execute(
    index: int, calculator: AlphaCalculatorBase, view: AlphaDataView, now: Callable[[], float] = time.perf_counter
) -> _Outcome:
    """Run one calculator, catching everything: a calculator must never take the run down. `now` times it."""
    started = now()
    try:
        own = view.copy() if calculator.mutates_inputs else view
        output = calculator.run(own)
    except (Exception, SystemExit) as exc:
        return _Outcome(index, now() - started, None, f"{type(exc).__name__}: {exc}", _tb(exc))
    return _Outcome(index, now() - started, output)


def _tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _to_run(
    calculator: AlphaCalculatorBase, outcome: _Outcome, universe: Sequence[str], timeout: float
) -> CalculatorRun:
    name = calculator.name
    if outcome.error is not None:
        return CalculatorRun(name, "failed", outcome.seconds, error=outcome.error, traceback=outcome.traceback)
    if outcome.seconds > timeout:
        return CalculatorRun(name, "timeout", outcome.seconds, error=f"took {outcome.seconds:.3f} s > {timeout} s")
    try:
        weights, dropped = clean_weights(outcome.output, universe)
    except Exception as exc:
        return CalculatorRun(name, "failed", outcome.seconds, error=f"{type(exc).__name__}: {exc}", traceback=_tb(exc))
    if weights.height == 0 and dropped:
        reason = f"every weight was dropped ({dropped} non-finite or outside the universe)"
        return CalculatorRun(name, "empty", outcome.seconds, weights, error=reason, dropped=dropped)
    return CalculatorRun(name, "ok", outcome.seconds, weights, dropped=dropped)


def _timed_out(calculator: AlphaCalculatorBase, seconds: float, timeout: float, detail: str) -> CalculatorRun:
    return CalculatorRun(calculator.name, "timeout", seconds, error=f"no result after {timeout} s ({detail})")


# Concurrency modes


def _run_none(
    calcs: Sequence[AlphaCalculatorBase], view: AlphaDataView, timeout: float, clock: Clock
) -> list[CalculatorRun]:
    """In the calling thread, timed by the injected clock (the other modes wait on real time: threads and processes
    cannot share a fake one)."""
    return [_to_run(c, _execute(i, c, view, clock.monotonic), view.universe, timeout) for i, c in enumerate(calcs)]


def _run_threads(
    calcs: Sequence[AlphaCalculatorBase], view: AlphaDataView, timeout: float, workers: int
) -> list[CalculatorRun]:
    done: queue.Queue[_Outcome] = queue.Queue()
    runs: dict[int, CalculatorRun] = {}
    pending = list(range(len(calcs)))
    running: dict[int, float] = {}

    def work(i: int) -> None:
        done.put(_execute(i, calcs[i], view))

    while pending or running:
        while pending and len(running) < workers:
            i = pending.pop(0)
            running[i] = time.monotonic()
            threading.Thread(target=work, args=(i,), name=f"alpha-{calcs[i].name}", daemon=True).start()
        deadline = min(running.values()) + timeout
        try:
            outcome = done.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            outcome = None
        if outcome is not None:
            if outcome.index in running:
                running.pop(outcome.index)
                runs[outcome.index] = _to_run(calcs[outcome.index], outcome, view.universe, timeout)
            continue
        now = time.monotonic()
        for i, started in list(running.items()):
            if now - started >= timeout:
                running.pop(i)
                runs[i] = _timed_out(calcs[i], now - started, timeout, "thread left running in the background")
    return [runs[i] for i in range(len(calcs))]


def _worker_main(conn: Connection, view_spec: dict[str, Any]) -> None:
    """Worker process: map the view once, say so, then run calculators sent by the parent until told to stop
    (saying when each one is loaded and starts)."""
    view = AlphaDataView.load_ipc(view_spec)
    conn.send_bytes(_READY)
    while True:
        message = conn.recv()
        if message is None:
            return
        index, payload = message
        try:
            calculator = pickle.loads(payload)
        except BaseException as exc:
            conn.send_bytes(pickle.dumps(_Outcome(index, 0.0, None, f"cannot load calculator: {exc!r}", _tb(exc))))
            continue
        conn.send_bytes(_LOADED)
        outcome = _execute(index, calculator, view)
        try:
            data = pickle.dumps(outcome)
        except BaseException as exc:
            data = pickle.dumps(_Outcome(index, outcome.seconds, None, f"result cannot be sent back: {exc!r}"))
        conn.send_bytes(data)


_READY = b"ready"
_LOADED = b"loaded"
# A worker's start-up (process start, mapping the view, importing a calculator's module) is not the calculator's
# time: the timeout starts when the calculator starts, so a loaded machine cannot turn a slow start into a timeout.
# Start-up itself is bounded by this, so a module that hangs at import still ends as a timeout.
STARTUP_SECONDS = 120.0
_CONTEXT: mp.context.ForkServerContext | None = None


def _context() -> mp.context.ForkServerContext:
    """forkserver with Polars preloaded: cheap worker starts without forking a process that runs Polars threads."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["polars", "numpy", "factors.engine"])
        _CONTEXT = ctx
    return _CONTEXT


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: int | None = None
    started: float = 0.0
    loading: bool = False


def _run_processes(
    calcs: Sequence[AlphaCalculatorBase], view: AlphaDataView, timeout: float, workers: int
) -> list[CalculatorRun]:
    runs: dict[int, CalculatorRun] = {}
    payloads: dict[int, bytes] = {}
    for i, calc in enumerate(calcs):
        try:
            payloads[i] = pickle.dumps(calc)
        except Exception as exc:
            runs[i] = CalculatorRun(calc.name, "failed", 0.0, error=f"cannot send to a worker process: {exc!r}")
    pending = [i for i in range(len(calcs)) if i in payloads]
    ctx = _context()
    pool: list[_Worker] = []
    try:
        spec = view.ipc_spec()

        def start() -> _Worker:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(child, spec), daemon=True)
            process.start()
            child.close()
            return _Worker(process, parent)

        def started() -> _Worker:
            return _await_ready([start()])[0]

        pool = _await_ready([start() for _ in range(min(workers, len(pending)))])
        restarts = 0
        while pending or any(w.task is not None for w in pool):
            for w in list(pool):
                if w.task is None and pending:
                    task = pending.pop(0)
                    try:
                        w.conn.send((task, payloads[task]))
                    except OSError:  # the idle worker died: replace it and retry, or give up if that keeps happening
                        restarts += 1
                        if restarts > len(calcs):
                            runs[task] = CalculatorRun(calcs[task].name, "failed", 0.0, error="worker processes died")
                        else:
                            pending.insert(0, task)
                        _replace(pool, w, started if pending else None)
                        continue
                    w.task, w.started, w.loading = task, time.monotonic(), True
            busy = [w for w in pool if w.task is not None]
            if not busy:
                continue
            deadline = min(w.started + (STARTUP_SECONDS if w.loading else timeout) for w in busy)
            ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            for w in busy:
                assert w.task is not None
                if w.conn in ready:
                    try:
                        data = w.conn.recv_bytes()
                        if data == _LOADED:  # the calculator's own time starts now
                            w.started, w.loading = now, False
                            continue
                        outcome: _Outcome = pickle.loads(data)
                    except (EOFError, OSError):
                        w.process.join(1)
                        outcome = _Outcome(w.task, now - w.started, None, f"worker died (exit {w.process.exitcode})")
                        _replace(pool, w, started if pending else None)
                    runs[w.task] = _to_run(calcs[w.task], outcome, view.universe, timeout)
                    w.task = None
                elif w.loading and now - w.started >= STARTUP_SECONDS:
                    detail = "its module did not load; worker process killed"
                    runs[w.task] = _timed_out(calcs[w.task], now - w.started, STARTUP_SECONDS, detail)
                    w.task = None
                    _replace(pool, w, started if pending else None)
                elif not w.loading and now - w.started >= timeout:
                    runs[w.task] = _timed_out(calcs[w.task], now - w.started, timeout, "worker process killed")
                    w.task = None
                    _replace(pool, w, started if pending else None)
    finally:
        for w in pool:
            _stop(w)
    return [runs[i] for i in range(len(calcs))]


def _await_ready(pool: list[_Worker]) -> list[_Worker]:
    """Wait until each worker has mapped the view (they start in parallel). A worker that died or never got ready
    is killed; handing it a task then fails and the dispatch loop replaces it or reports the calculator failed."""
    deadline = time.monotonic() + STARTUP_SECONDS
    for w in pool:
        try:
            ok = w.conn.poll(max(0.0, deadline - time.monotonic())) and w.conn.recv_bytes() == _READY
        except (EOFError, OSError):
            ok = False
        if not ok:
            w.process.kill()
            w.process.join(5)
    return pool


def _stop(w: _Worker) -> None:
    if w.process.is_alive() and w.task is None:
        with contextlib.suppress(BrokenPipeError, OSError):
            w.conn.send(None)
        w.process.join(1)
    if w.process.is_alive():
        w.process.kill()
        w.process.join(5)
    w.conn.close()


def _replace(pool: list[_Worker], worker: _Worker, start: Callable[[], _Worker] | None) -> None:
    """Kill a hung or dead worker and, if work remains, put a fresh one in its place."""
    worker.process.kill()
    worker.process.join(5)
    worker.conn.close()
    index = pool.index(worker)
    if start is None:
        pool.pop(index)
    else:
        pool[index] = start()


def run_calculators(
    calculators: Sequence[AlphaCalculatorBase],
    view: AlphaDataView,
    settings: AlphaSettings,
    paths: DataPaths | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[CalculatorRun]:
    """Run every calculator once on `view` with the configured concurrency; never raises for a calculator's fault.

    With `paths`, timeout streaks persist in data/factors/health.json and a calculator in its cool-down is not run
    (status "skipped"); `clock` decides when a cool-down ends and times the calculators of mode "none". Every run
    carries the history coverage of the view, which the caller reports once (HistoryCoverage.note).
    """
    coverage = history_coverage(view)
    health = CalculatorHealth.load(health_file(paths)) if paths is not None else CalculatorHealth()
    now_ms = clock.now_ms()
    skipped = {c.name: reason for c in calculators if (reason := health.skip_reason(c.name, now_ms))}
    active = [c for c in calculators if c.name not in skipped]
    by_name = {r.name: r for r in _run_modes(active, view, settings, clock)}
    for name, reason in skipped.items():
        log.warning("calculator %s %s", name, reason)
        by_name[name] = CalculatorRun(name, "skipped", 0.0, error=reason)
    if paths is not None:
        for run in (by_name[c.name] for c in active):
            message = health.record(run.name, run.status == "timeout", now_ms, settings)
            if message:
                log.warning(message)
                by_name[run.name] = dataclasses.replace(run, error=f"{run.error}; {message}")
        health.save(health_file(paths))
    return [dataclasses.replace(by_name[c.name], history=coverage) for c in calculators]


def _run_modes(
    calculators: Sequence[AlphaCalculatorBase], view: AlphaDataView, settings: AlphaSettings, clock: Clock
) -> list[CalculatorRun]:
    if not calculators:
        return []
    workers = settings.max_workers or len(calculators)
    if settings.concurrency == "none":
        return _run_none(calculators, view, settings.timeout_seconds, clock)
    if settings.concurrency == "thread":
        return _run_threads(calculators, view, settings.timeout_seconds, workers)
    if settings.concurrency == "process":
        workers = min(workers, os.cpu_count() or 1)
        return _run_processes(calculators, view, settings.timeout_seconds, workers)
    raise ValueError(f"unknown concurrency {settings.concurrency!r}; expected thread, process or none")


def run_alpha(
    calculators: Sequence[AlphaCalculatorBase],
    view: AlphaDataView,
    settings: StrategySettings,
    weights: Mapping[str, float] | None = None,
    paths: DataPaths | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AlphaResult:
    """Run the calculators and combine them into the alpha of `view`'s window (see the module docstring)."""
    started = time.perf_counter()
    runs = run_calculators(calculators, view, settings.alpha, paths, clock)
    return combine(
        runs,
        view.universe,
        settings.calculators.weights if weights is None else weights,
        view.window_ms,
        settings.alpha.min_success_ratio,
        settings.alpha.concurrency,
        time.perf_counter() - started,
    )


# Persistence: data/factors/YYYY-MM-DD/HHMM/{name}.parquet|.json and data/alpha/YYYY-MM-DD/HHMM.parquet|.json


def _stamp(window_ms: int) -> tuple[str, str]:
    dt = to_datetime(window_ms)
    return dt.strftime("%Y-%m-%d"), dt.strftime("%H%M")


def factor_dir(paths: DataPaths, window_ms: int) -> Path:
    day, hhmm = _stamp(window_ms)
    return paths.factors / day / hhmm


def alpha_file(paths: DataPaths, window_ms: int) -> Path:
    day, hhmm = _stamp(window_ms)
    return paths.alpha / day / f"{hhmm}.parquet"


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def run_record(run: CalculatorRun, window_ms: int) -> dict[str, Any]:
    return {
        "name": run.name,
        "window_ms": window_ms,
        "label": label_of(window_ms),
        "status": run.status,
        "seconds": round(run.seconds, 6),
        "symbols": run.weights.height,
        "dropped": run.dropped,
        "error": run.error,
        "traceback": run.traceback,
        "history": run.history.as_dict() if run.history else None,
    }


def persist_runs(paths: DataPaths, window_ms: int, runs: Sequence[CalculatorRun]) -> list[Path]:
    """Each calculator's cleaned vector (parquet) and run record (json), written atomically."""
    folder = factor_dir(paths, window_ms)
    written = []
    for run in runs:
        atomic_write_bytes(folder / f"{run.name}.parquet", _parquet(run.weights))
        atomic_write_text(folder / f"{run.name}.json", json.dumps(run_record(run, window_ms), indent=1))
        written += [folder / f"{run.name}.parquet", folder / f"{run.name}.json"]
    return written


def load_runs(paths: DataPaths, window_ms: int, names: Sequence[str]) -> list[CalculatorRun]:
    """Stored runs of `names` for a window; a calculator with nothing stored counts as failed."""
    folder = factor_dir(paths, window_ms)
    runs = []
    for name in names:
        record_file, vector_file = folder / f"{name}.json", folder / f"{name}.parquet"
        if not record_file.exists() or not vector_file.exists():
            runs.append(CalculatorRun(name, "failed", 0.0, error=f"no stored result in {folder}"))
            continue
        record = json.loads(record_file.read_text())
        history = record.get("history")
        runs.append(
            CalculatorRun(
                name,
                record["status"],
                record["seconds"],
                pl.read_parquet(vector_file).cast(pl.Schema(WEIGHTS_SCHEMA)),
                record.get("error"),
                record.get("traceback"),
                record.get("dropped", 0),
                HistoryCoverage.from_dict(history) if history else None,
            )
        )
    return runs


def persist_alpha(paths: DataPaths, result: AlphaResult) -> list[Path]:
    target = alpha_file(paths, result.window_ms)
    summary = {
        "window_ms": result.window_ms,
        "label": label_of(result.window_ms),
        "note": result.note,
        "success_ratio": result.success_ratio,
        "compute_seconds": round(result.compute_seconds, 6),
        "concurrency": result.concurrency,
        "calculators": {
            r.name: {"status": r.status, "weight": result.weights.get(r.name), "seconds": round(r.seconds, 6)}
            for r in result.runs
        },
        "failures": result.failures,
        "history": result.history.as_dict() if result.history else None,
    }
    atomic_write_bytes(target, _parquet(result.alpha))
    atomic_write_text(target.with_suffix(".json"), json.dumps(summary, indent=1))
    return [target, target.with_suffix(".json")]


def persist(result: AlphaResult, paths: DataPaths, window_ms: int) -> list[Path]:
    """Write the per-calculator vectors, timings, failures and the alpha of `window_ms` for research and audit."""
    if window_ms != result.window_ms:
        raise ValueError(f"result is for window {result.window_ms}, not {window_ms}")
    return persist_runs(paths, window_ms, result.runs) + persist_alpha(paths, result)
