"""The collector's operational knobs, kept apart from the daemon so that the CLI can build its parser (and `lsq
status` can run) without importing aiohttp, websockets or polars."""

from __future__ import annotations

from dataclasses import dataclass

from lsq.timelabels import DAY_MS

MAX_STREAMS = 1024  # Binance: streams per WebSocket connection


@dataclass(frozen=True)
class CollectorOptions:
    """Operational knobs; the defaults suit live Binance."""

    max_connection_age_s: float = 23 * 3600.0
    silence_s: float = 10.0
    streams_per_connection: int = MAX_STREAMS
    flush_interval_s: float = 2.0
    status_interval_s: float = 2.0
    universe_refresh_s: float = 60.0
    max_catchup_ms: int = DAY_MS
    backoff_cap_s: float = 30.0
    # Parts are merged into their hour file every minute, half a minute off the window boundaries: a window run then
    # reads one hour file and ~15 small parts per symbol instead of up to an hour of 2-second flushes, and the merge
    # never competes with the run that starts right after a marker.
    compact_every_s: float = 60.0
    # While the data directory refuses writes (disk full), trades stay in memory up to this many rows (roughly
    # 300 bytes each, so ~600 MB); beyond it, new trades are left as id gaps for REST to fetch once space returns.
    max_buffered_rows: int = 2_000_000

    def __post_init__(self) -> None:
        if not 2 <= self.streams_per_connection <= MAX_STREAMS:
            raise ValueError(
                f"streams_per_connection must be within 2..{MAX_STREAMS}, got {self.streams_per_connection}"
            )
        timings = (self.max_connection_age_s, self.silence_s, self.flush_interval_s, self.status_interval_s)
        if min(*timings, self.compact_every_s) <= 0:
            raise ValueError(f"collector timings must be positive: {self}")
        if self.flush_interval_s > 2.0:
            raise ValueError(f"flush_interval_s must be at most 2 s, got {self.flush_interval_s}")
        if self.max_buffered_rows < 1:
            raise ValueError(f"max_buffered_rows must be positive, got {self.max_buffered_rows}")
