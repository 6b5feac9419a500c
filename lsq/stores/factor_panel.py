"""The calculators' view of the trailing history, kept as a rolling panel that maps into memory without copying.

Layout (`prepare`): `symbol` as a strategy name (btc-usdt), Decimal columns as Float64, rows of [start, end) sorted
by symbol then time. Rebuilding that from 30 days of parquet on every window run cost seconds and gigabytes; here
data/factor_view/ holds the complete UTC days before the current one (the "base") as one Arrow IPC file per kind,
{kind}.{generation}.arrow, plus manifest.json. A run maps the base, reads only the current day from its parquet
file (at most 288 windows) and appends each symbol's rows after its base block as further chunks: nothing of the
base is copied.

Rewrites: the base gains a completed day in `roll_base`, which the daily `factor_view_schedule` runs minutes after
midnight, between the day's last window and the first one of the next, so no window run pays for it (at 300 symbols
it costs seconds and the first window of a day is a funding window). Until it has run, a window run reads the day
just completed from parquet too (PARQUET_DAYS); a base further behind, or whose source days changed earlier than
that, is rewritten by the window run itself before it reads.

Staleness: the manifest records each source day file's (inode, size, mtime_ns). Day files are only ever replaced
atomically (write temp + rename, lsq.stores.panels.write_panel), so every write of a day - a backfill of older
windows, a re-materialised window - gives it a new fingerprint, and ~31 stats per run detect it without reading
data (a content hash would read every byte, the very cost this panel removes). Changed, appeared or vanished days
are re-read from parquet, unchanged ones carried over from the old base. A day is stat'ed before it is read, so a
write racing the read leaves a fingerprint that no longer matches and the day is re-read next run: the panel never
keeps rows its parquet no longer has.

Rebuilt from parquet when the manifest or a base file is missing, unreadable, of another VERSION, or holds another
row count. A write lands as new generation files, then the manifest (atomic: the commit), then old generations go;
all under one flock that readers hold too while they check and map, so nobody maps a half-written panel (a mapping
outlives a later replacement: the old inode stays readable). A window older than the stored base (a re-run of old
factor partitions) reads parquet directly and leaves the panel alone: it follows the live edge.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from lsq.paths import DataPaths, atomic_write_text, temp_beside
from lsq.stores.panels import day_file, path_lock, scan_panel
from lsq.symbols import to_exchange, to_strategy
from lsq.timelabels import DAY_MS, day_start, format_day

log = logging.getLogger(__name__)

VERSION = 1
TIME_COLUMNS: dict[str, str] = {
    "bars": "open_time",
    "tran_stats": "open_time",
    "premium_index": "open_time",
    "funding": "funding_time",
}
KINDS = tuple(TIME_COLUMNS)
# Symbols per record batch when a base is rewritten: bounds the memory of a rewrite to a few symbols' rows.
BATCH_SYMBOLS = 32
# Complete days a window run may read from parquet beside the current one before it rewrites the base itself: the day
# that just ended until roll_base has written it in, or a recent day re-written since the base was.
PARQUET_DAYS = 1

Fingerprint = list[int] | None


def strategy_name(symbol: str) -> str:
    """Any symbol spelling (BTCUSDT or btc-usdt) -> btc-usdt."""
    return to_strategy(to_exchange(symbol))


def float_columns(schema: pl.Schema) -> list[pl.Expr]:
    """Decimal columns as Float64 via their integer representation: ~2x faster than a cast, within 1 ulp of it."""
    return [
        (pl.col(name).to_physical().cast(pl.Float64) / float(10**dtype.scale)).alias(name)
        for name, dtype in schema.items()
        if isinstance(dtype, pl.Decimal)
    ]


def _is_sorted(frame: pl.DataFrame, tcol: str) -> bool:
    sym, t = pl.col("symbol"), pl.col(tcol)
    changes = (sym != sym.shift(1)).fill_null(True)
    ordered = (changes & (sym >= sym.shift(1)).fill_null(True)) | (~changes & (t > t.shift(1)))
    return bool(frame.select(ordered.all()).item())


def in_order(frame: pl.DataFrame, tcol: str) -> pl.DataFrame:
    """`frame` sorted by symbol then time.

    Stored panels arrive as runs of one symbol in time order (per-day files, each sorted, or renamed symbols), so
    the runs are reordered by (symbol, first time) with one block gather, far cheaper than a full sort of many
    columns; the result is verified, and anything else falls back to a full sort.
    """
    if frame.height == 0 or _is_sorted(frame, tcol):
        return frame
    runs = frame.get_column("symbol").rle()
    lengths = runs.struct.field("len").cast(pl.Int64).to_numpy()
    starts = np.cumsum(lengths) - lengths
    names = runs.struct.field("value").rank("dense").cast(pl.Int64).to_numpy()
    first_times = frame.get_column(tcol).gather(starts).to_numpy()
    order = np.lexsort((first_times, names))
    starts, lengths = starts[order], lengths[order]
    out_starts = np.cumsum(lengths) - lengths
    index = pl.Series(np.arange(lengths.sum()) + np.repeat(starts - out_starts, lengths))
    reordered = frame.select(pl.all().gather(index))  # one expression per column: gathered in parallel
    return reordered if _is_sorted(reordered, tcol) else frame.sort("symbol", tcol)


def prepare(kind: str, frame: pl.DataFrame | None, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The calculators' layout of stored rows: strategy names, floats for decimals, [start_ms, end_ms), sorted."""
    tcol = TIME_COLUMNS[kind]
    if frame is None or frame.width == 0:
        return pl.DataFrame(schema={"symbol": pl.String, tcol: pl.Int64})
    missing = {"symbol", tcol} - set(frame.columns)
    if missing:
        raise ValueError(f"{kind} panel lacks columns {sorted(missing)} (has {frame.columns})")
    names = frame.get_column("symbol").unique().to_list()
    mapping = {s: strategy_name(s) for s in names}
    out = frame.filter(pl.col(tcol).is_between(start_ms, end_ms, closed="left")).with_columns(
        pl.col("symbol").replace_strict(mapping, return_dtype=pl.String), *float_columns(frame.schema)
    )
    return in_order(out, tcol)


def map_ipc(path: Path) -> pl.DataFrame:
    """Zero-copy frame over a memory-mapped Arrow IPC file (the mapping lives as long as the frame's buffers)."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    frame = pl.from_arrow(table, rechunk=False)
    if not isinstance(frame, pl.DataFrame):  # a Table always converts to a frame; the stub's union says Series too
        raise TypeError(f"{path} holds no Arrow table")
    return frame


def read_direct(
    paths: DataPaths, kind: str, start_ms: int, end_ms: int, symbols: Sequence[str] | None = None
) -> pl.DataFrame | None:
    """The layout straight from parquet (None when no day file exists); `symbols` (Binance names) narrows it."""
    lf = scan_panel(paths, kind, start_ms, end_ms)
    if lf is None:
        return None
    if symbols is not None:
        lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
    return prepare(kind, lf.collect(), start_ms, end_ms)


def load_view(
    paths: DataPaths, start_ms: int, end_ms: int, symbols: Sequence[str] | None = None
) -> dict[str, pl.DataFrame | None]:
    """Every kind's rows of [start_ms, end_ms) in the calculators' layout, equal to `read_direct`'s, through the
    rolling panel (refreshed first when stale). `symbols` (Binance names) narrows it; None when no day file exists.
    """
    current = day_start(end_ms - 1)
    lo = day_start(start_ms)
    folder = paths.factor_view
    base: Base | None = None
    until = current
    try:
        with path_lock(folder / "manifest.json"):
            manifest = _read_manifest(folder)
            older = manifest is not None and manifest["hi"] > current
            if not older:
                base, until = _window_base(paths, folder, manifest, lo, current)
    except OSError as exc:  # a cache: a full disk or a read-only data directory costs speed, never the run
        log.warning("factor view panel under %s not usable (%s); reading the parquet day files", folder, exc)
        base = None
    if base is None:
        return {kind: read_direct(paths, kind, start_ms, end_ms, symbols) for kind in KINDS}
    names = None if symbols is None else {strategy_name(s) for s in symbols}
    out: dict[str, pl.DataFrame | None] = {}
    for kind in KINDS:
        frame, offsets = base[kind]
        recent = read_direct(paths, kind, until, end_ms)
        out[kind] = _assemble(kind, frame, offsets, recent, start_ms, until, names)
    return out


def roll_base(paths: DataPaths, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Bring the base up to date for windows ending in `end_ms`'s day with `start_ms`'s history, outside any window
    run (factor_view_schedule, just after midnight). A no-op when it is current; a base already past that day (a late
    or manual roll of an earlier day) is left alone. Returns the manifest's figures and whether it was written."""
    current, lo = day_start(end_ms - 1), day_start(start_ms)
    folder = paths.factor_view
    with path_lock(folder / "manifest.json"):
        manifest = _read_manifest(folder)
        before = None if manifest is None else manifest["generation"]
        if manifest is None or manifest["hi"] <= current:
            _refresh(paths, folder, manifest, lo, current)
        after = _read_manifest(folder)
    if after is None:
        raise RuntimeError(f"the factor view panel under {folder} has no readable manifest after a roll")
    return {
        "rewritten": after["generation"] != before,
        "generation": after["generation"],
        "first_day": format_day(after["lo"]),
        "days": (after["hi"] - after["lo"]) // DAY_MS,
        "rows": {kind: entry["rows"] for kind, entry in after["kinds"].items()},
    }


def _window_base(
    paths: DataPaths, folder: Path, manifest: dict[str, Any] | None, lo: int, current: int
) -> tuple[Base, int]:
    """The base a window run assembles from and the time its parquet part starts. The stored base serves as long as
    its unchanged days reach to within PARQUET_DAYS of `current`; otherwise it is rewritten first (the caller holds
    the lock)."""
    if manifest is not None and manifest["lo"] <= lo:
        until = _unchanged_until(paths, manifest, lo)
        if until >= current - PARQUET_DAYS * DAY_MS:
            base = _map_base(folder, manifest)
            if base is not None:
                return base, until
    return _refresh(paths, folder, manifest, lo, current), current


def _unchanged_until(paths: DataPaths, stored: Mapping[str, Any], lo: int) -> int:
    """The start of the first day from `lo` on whose source file of any kind changed since the base was written, or
    the base's end: the base's rows before it are still exactly the parquet's."""
    for day in range(lo, stored["hi"], DAY_MS):
        label = format_day(day)
        for kind in KINDS:
            if (stored["kinds"][kind].get("days") or {}).get(label) != _fingerprint(day_file(paths, kind, day)):
                return day
    return int(stored["hi"])


def _assemble(
    kind: str,
    base: pl.DataFrame | None,
    offsets: Mapping[str, tuple[int, int]],
    recent: pl.DataFrame | None,
    start_ms: int,
    until_ms: int,
    names: set[str] | None,
) -> pl.DataFrame | None:
    """Per symbol: its base rows of [start_ms, until_ms), then its rows from parquet; slices only, no copy."""
    if base is None and recent is None:
        return None
    tcol = TIME_COLUMNS[kind]
    recent_offsets = _offsets(recent) if recent is not None else {}
    times = base.get_column(tcol).to_numpy() if base is not None and base.height else np.empty(0, np.int64)
    pieces = []
    for symbol in sorted(set(offsets) | set(recent_offsets)):
        if names is not None and symbol not in names:
            continue
        if base is not None and symbol in offsets:
            offset, length = offsets[symbol]
            first, stop = np.searchsorted(times[offset : offset + length], [start_ms, until_ms])
            if first < stop:
                pieces.append(base.slice(offset + int(first), int(stop - first)))
        if recent is not None and symbol in recent_offsets:
            pieces.append(recent.slice(*recent_offsets[symbol]))
    schema_of = base if base is not None else recent
    assert schema_of is not None
    return pl.concat(pieces, rechunk=False) if pieces else schema_of.clear()


def _offsets(frame: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """symbol -> (offset, length) of its contiguous block in a frame sorted by symbol."""
    if frame.height == 0:
        return {}
    runs = frame.get_column("symbol").rle()
    lengths = runs.struct.field("len").cast(pl.Int64).to_list()
    values = runs.struct.field("value").to_list()
    result: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, length in zip(values, lengths, strict=True):
        result[name] = (offset, length)
        offset += length
    return result


def _fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _prints(paths: DataPaths, kind: str, lo: int, hi: int) -> dict[str, Fingerprint]:
    return {format_day(d): _fingerprint(day_file(paths, kind, d)) for d in range(lo, hi, DAY_MS)}


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        return None
    shape = {"generation": int, "lo": int, "hi": int, "kinds": dict}
    return manifest if all(isinstance(manifest.get(k), t) for k, t in shape.items()) else None


Base = dict[str, tuple[pl.DataFrame | None, dict[str, tuple[int, int]]]]


def _map_base(folder: Path, manifest: Mapping[str, Any]) -> Base | None:
    """The manifest's base files mapped, or None when one is missing, unreadable or of another length."""
    base: Base = {}
    try:
        for kind in KINDS:
            entry = manifest["kinds"][kind]
            if entry["file"] is None:
                base[kind] = (None, {})
                continue
            frame = map_ipc(folder / entry["file"])
            if frame.height != entry["rows"]:
                return None
            base[kind] = (frame, {s: (int(o), int(n)) for s, (o, n) in entry["offsets"].items()})
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None
    return base


def _refresh(paths: DataPaths, folder: Path, manifest: dict[str, Any] | None, lo: int, hi: int) -> Base:
    """The base of the complete days [lo, hi), rewritten first unless the stored one is still valid for them
    (only the changed days re-read). The caller holds the lock."""
    old = _map_base(folder, manifest) if manifest is not None else None
    stored = manifest if old is not None else None
    if old is not None and stored is not None and _still_valid(paths, stored, lo, hi):
        return old
    days = range(lo, hi, DAY_MS)
    prints = {kind: _prints(paths, kind, lo, hi) for kind in KINDS}
    # past every generation on disk, so a rebuild never overwrites a file that another run may still have mapped
    generation = 1 + max((int(p.name.split(".")[1]) for p in folder.glob("*.*.arrow")), default=0)
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        old_frame, old_offsets = old[kind] if old is not None else (None, {})
        old_days = (stored["kinds"][kind].get("days") or {}) if stored is not None else {}
        now = prints[kind]
        keep = [d for d in days if now[format_day(d)] is not None and old_days.get(format_day(d)) == now[format_day(d)]]
        fresh = [d for d in days if now[format_day(d)] is not None and d not in keep]
        kinds[kind] = {**_write_kind(paths, folder, kind, generation, old_frame, old_offsets, keep, fresh), "days": now}
    atomic_write_text(
        folder / "manifest.json",
        json.dumps({"version": VERSION, "generation": generation, "lo": lo, "hi": hi, "kinds": kinds}),
    )
    live = {entry["file"] for entry in kinds.values() if entry["file"] is not None}
    for stale in [*folder.glob("*.arrow"), *folder.glob(".*.tmp")]:  # older generations, a crashed write's parts
        if stale.name not in live:
            stale.unlink(missing_ok=True)
    new = _map_base(folder, {"kinds": kinds})
    if new is None:
        raise RuntimeError(f"the factor view panel just written under {folder} does not read back")
    return new


def _still_valid(paths: DataPaths, stored: Mapping[str, Any], lo: int, hi: int) -> bool:
    """The stored base ends at `hi`, starts at or before `lo` (older rows are skipped when assembling) and none
    of its source days changed."""
    return stored["hi"] == hi and stored["lo"] <= lo and _unchanged_until(paths, stored, stored["lo"]) == hi


def _write_kind(
    paths: DataPaths,
    folder: Path,
    kind: str,
    generation: int,
    old: pl.DataFrame | None,
    old_offsets: Mapping[str, tuple[int, int]],
    keep: Sequence[int],
    fresh: Sequence[int],
) -> dict[str, Any]:
    """Write one kind's base: the old base's rows of `keep` days and the parquet rows of `fresh` days, sorted,
    in batches of BATCH_SYMBOLS symbols. No day at all: no file."""
    if not keep and not fresh:
        return {"file": None, "rows": 0, "offsets": {}}
    tcol = TIME_COLUMNS[kind]
    new = _read_days(paths, kind, fresh)
    in_kept = (pl.col(tcol) - pl.col(tcol) % DAY_MS).is_in(list(keep))
    symbols = sorted(set(old_offsets if keep else {}).union(*(day_offsets for _, day_offsets in new)))
    name = f"{kind}.{generation}.arrow"
    offsets: dict[str, tuple[int, int]] = {}
    rows = 0
    fd, tmp = temp_beside(folder / name)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer: pa.ipc.RecordBatchFileWriter | None = None
            for batch in _batches(symbols):
                parts = []
                if old is not None and keep:
                    parts.append(_block(old, old_offsets, batch).filter(in_kept))
                parts += [_block(day, day_offsets, batch) for day, day_offsets in new]
                frame = in_order(pl.concat(parts, how="vertical"), tcol)
                for symbol, (offset, length) in _offsets(frame).items():
                    offsets[symbol] = (rows + offset, length)
                rows += frame.height
                table = frame.to_arrow()
                if writer is None:
                    writer = pa.ipc.new_file(fh, table.schema)
                writer.write_table(table)
            if writer is None:  # the days' files hold no rows
                empty = (new[0][0] if new else old if old is not None else prepare(kind, None, 0, 0)).clear()
                writer = pa.ipc.new_file(fh, empty.to_arrow().schema)
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": name, "rows": rows, "offsets": {s: list(v) for s, v in offsets.items()}}


def _batches(symbols: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(symbols), BATCH_SYMBOLS):
        yield symbols[i : i + BATCH_SYMBOLS]


def _block(frame: pl.DataFrame, offsets: Mapping[str, tuple[int, int]], symbols: Sequence[str]) -> pl.DataFrame:
    """The rows of `symbols` (consecutive in sort order) of a frame sorted by symbol: one slice."""
    spans = [offsets[s] for s in symbols if s in offsets]
    if not spans:
        return frame.clear()
    first = spans[0][0]
    last = spans[-1][0] + spans[-1][1]
    return frame.slice(first, last - first)


def _read_days(
    paths: DataPaths, kind: str, days: Sequence[int]
) -> list[tuple[pl.DataFrame, dict[str, tuple[int, int]]]]:
    """Each stored day in the calculators' layout with its symbols' blocks. Day by day, so only one day's Decimal
    rows are in memory at a time (a rebuild of 30 days would otherwise hold them all twice)."""
    out = []
    for day in days:
        path = day_file(paths, kind, day)
        if path.exists():
            frame = prepare(kind, pl.read_parquet(path), day, day + DAY_MS)
            out.append((frame, _offsets(frame)))
    return out
