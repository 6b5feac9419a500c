"""UTC window arithmetic: 5-minute windows, strategy labels and Dagster partition keys.

All times are integer milliseconds since the epoch, UTC.
- window start: floor(T / 5 min) * 5 min
- time_label: 1..288, the 5-minute index within the UTC day (minutes since midnight // 5 + 1)
- strategy label: 'YYYY-MM-DD-HHH', e.g. '2024-08-08-288' is the window 23:55-24:00
- partition key: 'YYYY-MM-DD-HH:MM' of the window start, e.g. '2024-08-08-23:55'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

MINUTE_MS = 60_000
WINDOW_MS = 5 * MINUTE_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WINDOWS_PER_DAY = DAY_MS // WINDOW_MS
PARTITION_FMT = "%Y-%m-%d-%H:%M"

PERIOD_MS: dict[str, int] = {
    "5min": WINDOW_MS,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "24h": DAY_MS,
}

_LABEL_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})-(\d{3})$")


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def window_start(ms: int, period_ms: int = WINDOW_MS) -> int:
    """Start of the period containing `ms` (periods aligned to UTC midnight)."""
    return ms - ms % period_ms


def time_label(ms: int, period_ms: int = WINDOW_MS) -> int:
    """1-based index of the period containing `ms` within its UTC day."""
    return (ms % DAY_MS) // period_ms + 1


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: times must be timezone-aware")
    return int(dt.timestamp() * 1000)


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def parse_day(day: str) -> int:
    """'YYYY-MM-DD' (UTC) -> ms of its midnight."""
    try:
        dt = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"bad date {day!r}: expected YYYY-MM-DD") from None
    return from_datetime(dt)


def format_day(ms: int) -> str:
    return to_datetime(ms).strftime("%Y-%m-%d")


def label_of(ms: int) -> str:
    """Strategy label of the 5-minute window containing `ms`."""
    return f"{format_day(ms)}-{time_label(ms):03d}"


def parse_label(label: str) -> int:
    """Strategy label -> start ms of its 5-minute window. Raises ValueError naming the bad label."""
    m = _LABEL_RE.match(label) if isinstance(label, str) else None
    if not m:
        raise ValueError(f"bad label {label!r}: expected 'YYYY-MM-DD-HHH' with HHH in 001..288")
    index = int(m.group(2))
    if not 1 <= index <= WINDOWS_PER_DAY:
        raise ValueError(f"bad label {label!r}: HHH must be 001..288, got {index}")
    return parse_day(m.group(1)) + (index - 1) * WINDOW_MS


def partition_key(ms: int) -> str:
    """Dagster partition key of the 5-minute window containing `ms`."""
    return to_datetime(window_start(ms)).strftime(PARTITION_FMT)


def parse_partition_key(key: str) -> int:
    """Dagster 5-minute partition key -> window start ms."""
    try:
        dt = datetime.strptime(key, PARTITION_FMT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"bad partition key {key!r}: expected YYYY-MM-DD-HH:MM") from None
    ms = from_datetime(dt)
    if ms % WINDOW_MS:
        raise ValueError(f"bad partition key {key!r}: not on a 5-minute boundary")
    return ms
