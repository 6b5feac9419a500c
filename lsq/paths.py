"""Where everything lives under the data directory. Every package asks here; none builds paths itself.

data/
  trades/{SYMBOL}/YYYY-MM-DD-HHh.parquet          compacted UTC hour of aggTrades
  trades/{SYMBOL}/parts/YYYY-MM-DD-HHh/*.parquet   small flushes of the open hour (readers see both)
  markers/YYYY-MM-DD/HHMM.json                     a sealed 5-minute window (the pipeline's sensor watches these)
  markers/YYYY-MM-DD/HHMM.claim                    who launched the window's run: the trigger or the sensor
  collector/status.json                            the collector's heartbeat
  mark_price/                                      mark/index price and funding-rate snapshots from the stream
  history/aggTrades/{SYMBOL}/YYYY-MM-DD.json       days fully imported from the bulk files
  universe/YYYY-MM-DD/{version}/universe.csv       the trading universe of a UTC day
  bars/..., tran_stats/..., premium_index/..., funding/...   pipeline outputs
  factors/..., alpha/...                           per-run calculator vectors and alphas
  factor_view/                                     the calculators' rolling panel (lsq.stores.factor_panel)
  positions/{account_id}_target_positions_{YYYYmmdd_HHMMSS}.json
  execution/{account_id}/                          the executor's journal (SQLite), halt switch, equity peak
  execution/{account_id}/claims/YYYY-MM-DD/HHMM.claim  who launched the account's run of a window
  monitoring/{account_id}/...                      account snapshots, income, fills, orders (monitoring.store)
  simulator/                                       the simulator's account state
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lsq.timelabels import HOUR_MS, to_datetime


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @property
    def trades(self) -> Path:
        return self.root / "trades"

    def symbol_trades(self, symbol: str) -> Path:
        return self.trades / symbol.upper()

    def trade_hour_file(self, symbol: str, hour_ms: int) -> Path:
        return self.symbol_trades(symbol) / f"{hour_tag(hour_ms)}.parquet"

    def trade_parts_dir(self, symbol: str, hour_ms: int) -> Path:
        return self.symbol_trades(symbol) / "parts" / hour_tag(hour_ms)

    @property
    def markers(self) -> Path:
        return self.root / "markers"

    def marker_file(self, window_ms: int) -> Path:
        dt = to_datetime(window_ms)
        return self.markers / dt.strftime("%Y-%m-%d") / dt.strftime("%H%M.json")

    def marker_claim(self, window_ms: int) -> Path:
        """Who launched the window's run (lsq_pipeline.defs.market.claims)."""
        return self.marker_file(window_ms).with_suffix(".claim")

    @property
    def collector_status(self) -> Path:
        return self.root / "collector" / "status.json"

    def universe_file(self, day: str, version: str) -> Path:
        return self.root / "universe" / day / version / "universe.csv"

    @property
    def bars(self) -> Path:
        return self.root / "bars"

    @property
    def tran_stats(self) -> Path:
        return self.root / "tran_stats"

    @property
    def premium_index(self) -> Path:
        return self.root / "premium_index"

    @property
    def funding(self) -> Path:
        return self.root / "funding"

    @property
    def factors(self) -> Path:
        return self.root / "factors"

    @property
    def factor_view(self) -> Path:
        return self.root / "factor_view"

    @property
    def alpha(self) -> Path:
        return self.root / "alpha"

    @property
    def positions(self) -> Path:
        return self.root / "positions"

    def execution(self, account_id: str) -> Path:
        return self.root / "execution" / account_id

    def execution_claim(self, account_id: str, window_ms: int) -> Path:
        """Who launched the account's execution run of the window (lsq_pipeline.defs.execution.lane)."""
        day_and_time = self.marker_file(window_ms).relative_to(self.markers).with_suffix(".claim")
        return self.execution(account_id) / "claims" / day_and_time

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    def monitoring_account(self, account_id: str) -> Path:
        return self.monitoring / account_id

    @property
    def simulator(self) -> Path:
        return self.root / "simulator"

    @property
    def history_cache(self) -> Path:
        return self.root / "history"

    def history_day_marker(self, symbol: str, day: str) -> Path:
        """Written once a whole UTC day of a symbol's trades came from the bulk files (backfill resumes past it)."""
        return self.history_cache / "aggTrades" / symbol.upper() / f"{day}.json"

    @property
    def mark_price(self) -> Path:
        return self.root / "mark_price"


def hour_tag(hour_ms: int) -> str:
    """UTC hour tag used in trade file names: 2024-08-08-23h."""
    if hour_ms % HOUR_MS:
        raise ValueError(f"{hour_ms} is not on an hour boundary")
    return to_datetime(hour_ms).strftime("%Y-%m-%d-%Hh")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file (descriptor, name) in `path`'s directory, to be renamed onto `path`, with the mode a
    plain create would give (mkstemp's 0600 would hide the file from other readers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, then rename: readers never see half a file."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_exclusive(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists (then False): the complete file appears at once or not at all."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
