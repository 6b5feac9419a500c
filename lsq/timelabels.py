"""UTC window arithmetic and the system's time vocabulary: periods, windows and their three names.

All times are integer milliseconds since the epoch, UTC.
- window start: floor(T / 5 min) * 5 min
- time_label: 1..288, the 5-minute index within the UTC day (minutes since midnight // 5 + 1)
- a window has three names, all parsed by `parse_window`:
  - partition key 'YYYY-MM-DD-HH:MM' of the window START, e.g. '2026-12-01-09:05' (Dagster, markers, claims)
  - strategy label 'YYYY-MM-DD-HHH', e.g. '2026-12-01-110' is 09:05-09:10 ('...-288' is 23:55-24:00)
  - positions stamp 'YYYYmmdd_HHMMSS' of the window END, e.g. '20261201_091000' (data/positions/ file names)
- periods: one canonical set PERIODS ('5m', '1h', '4h', '8h', '12h', '24h'), the spelling of configuration,
  partitions and storage folders; `parse_period` also accepts the strategy API's '5min' and other spellings of the
  same durations ('60min', '1d', '5M').
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
    "5m": WINDOW_MS,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "24h": DAY_MS,
}

PERIODS = tuple(PERIOD_MS)
STAMP_FMT = "%Y%m%d_%H%M%S"

_LABEL_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})-(\d{3})$")
_PERIOD_RE = re.compile(r"^(\d+)\s*(m|min|mins|minute|minutes|h|hour|hours|d|day|days)$")
_UNIT_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_STAMP_RE = re.compile(r"^_?(\d{8}_\d{6})$")


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


def parse_period(text: str, what: str = "period") -> str:
    """Any spelling of a supported period ('5min', '5m', '60min', '1H', '1d') -> its canonical name in PERIODS.
    `what` names the argument in the error (the strategy API calls it a mode)."""
    m = _PERIOD_RE.match(text.strip().lower()) if isinstance(text, str) else None
    if m:
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)[0]]
        for name, period_ms in PERIOD_MS.items():
            if period_ms == ms:
                return name
    raise ValueError(f"unknown {what} {text!r}; expected one of {', '.join(PERIODS)} (or '5min')")


def period_ms(text: str) -> int:
    """Length of a period given in any accepted spelling."""
    return PERIOD_MS[parse_period(text)]


def positions_stamp(window_ms: int) -> str:
    """The positions-file stamp of the 5-minute window containing `window_ms`: its END as YYYYmmdd_HHMMSS."""
    return to_datetime(window_start(window_ms) + WINDOW_MS).strftime(STAMP_FMT)


def parse_window(text: str) -> int:
    """Any name of a 5-minute window -> its start ms: a partition key ('2026-12-01-09:05', the start), a strategy
    label ('2026-12-01-110') or a positions stamp ('20261201_091000' or '_20261201_091000', the END).
    ValueError names the accepted forms."""
    text = text.strip() if isinstance(text, str) else text
    if isinstance(text, str):
        if _LABEL_RE.match(text):
            return parse_label(text)
        if stamp := _STAMP_RE.match(text):
            try:
                end = from_datetime(datetime.strptime(stamp.group(1), STAMP_FMT).replace(tzinfo=UTC))
            except ValueError:
                end = -1
            if end >= 0 and end % WINDOW_MS == 0:
                return end - WINDOW_MS
        else:
            try:
                return parse_partition_key(text)
            except ValueError:
                pass
    raise ValueError(
        f"bad window {text!r}: expected a partition key YYYY-MM-DD-HH:MM (window start, e.g. 2026-12-01-09:05), "
        "a label YYYY-MM-DD-HHH (001..288, e.g. 2026-12-01-110) or a positions stamp YYYYmmdd_HHMMSS "
        "(window end, e.g. 20261201_091000)"
    )
