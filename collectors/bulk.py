"""Binance public-data aggTrades files (data.binance.vision layout): name parsing, CSV parsing, checksum, download.

A file is `{SYMBOL}-aggTrades-{YYYY-MM-DD}.zip` (a UTC day) or `{SYMBOL}-aggTrades-{YYYY-MM}.zip` (a month), holding one
CSV of columns agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time, is_buyer_maker, with or
without a header line (older files have none), booleans true/false or True/False. Parsing is all-or-nothing: every
row is checked with vectorised Polars expressions and the first bad one is reported by file and line number, so a
caller never stores part of a broken file. Prices and quantities are parsed from their text into Decimal(38, 8) after
checking they have at most 8 decimals, so no value is ever rounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import struct
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import cast

import aiohttp
import polars as pl
from isal import isal_zlib

from lsq.schema import TRADE_SCHEMA
from lsq.timelabels import DAY_MS, format_day

COLUMNS = list(TRADE_SCHEMA)
HEADER = ",".join(COLUMNS)
_NAME_RE = re.compile(r"^(?P<symbol>[A-Z0-9]{2,40})-aggTrades-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>csv|zip)$")
_INT = r"^[0-9]{1,18}$"
DECIMAL_PATTERN = r"^[0-9]{1,29}(\.[0-9]{1,8})?$"  # what Binance prints: at most 8 decimals, no sign
CHUNK_BYTES = 64 * 1024 * 1024
INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # isal's stubs declare its error class as an instance
_MIN_MS, _MAX_MS = 10**12, 10**13  # 2001 .. 2286 in milliseconds; microsecond stamps (16 digits) are refused


class BulkFileError(ValueError):
    """A public-data file that cannot be used as given; the message names the file (and line)."""


@dataclass(frozen=True)
class FileName:
    """What a public-data file name says: the symbol and the UTC period [start_ms, end_ms) it covers."""

    symbol: str
    start_ms: int
    end_ms: int


def parse_file_name(name: str) -> FileName | None:
    """`BTCUSDT-aggTrades-2024-08-08.zip` -> (BTCUSDT, that day); monthly names cover the month; None if no match."""
    m = _NAME_RE.match(Path(name).name)
    if not m:
        return None
    period = m["period"]
    try:
        if len(period) == 10:
            start = datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=UTC)
            end_ms = int(start.timestamp() * 1000) + DAY_MS
        else:
            start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
            nxt = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
            end_ms = int(nxt.timestamp() * 1000)
    except ValueError:
        return None
    return FileName(m["symbol"], int(start.timestamp() * 1000), end_ms)


def unzip_single_csv(data: bytes, source: str) -> tuple[str, bytes]:
    """The one CSV member of a public-data zip, as (member name, bytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [i for i in archive.infolist() if not i.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = [i.filename for i in members]
                raise BulkFileError(f"{source}: expected exactly one .csv inside the zip, found {names}")
            member = members[0]
            if member.compress_type != zipfile.ZIP_DEFLATED:
                return member.filename, archive.read(member)
    except zipfile.BadZipFile as exc:
        raise BulkFileError(f"{source}: not a valid zip file ({exc})") from None
    return member.filename, _inflate(data, member, source)


def _inflate(data: bytes, member: zipfile.ZipInfo, source: str) -> bytes:
    """A deflated member's bytes, inflated by ISA-L (2-3x zlib's speed, without the GIL; a month of 40 symbols is
    6.6 GB of CSV) and checked against the member's size and CRC-32 as zipfile checks them."""
    header = member.header_offset
    if data[header : header + 4] != b"PK\x03\x04":
        raise BulkFileError(f"{source}: not a valid zip file (no local header for {member.filename})")
    name_length, extra_length = struct.unpack_from("<HH", data, header + 26)
    start = header + 30 + name_length + extra_length
    try:
        text = isal_zlib.decompress(data[start : start + member.compress_size], -15, max(member.file_size, 1))
    except INFLATE_ERROR as exc:
        raise BulkFileError(f"{source}: corrupt zip member {member.filename} ({exc})") from None
    if len(text) != member.file_size or isal_zlib.crc32(text) != member.CRC:
        raise BulkFileError(f"{source}: corrupt zip member {member.filename} (size or CRC-32 does not match)")
    return text


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return (data if end < 0 else data[:end]).rstrip(b"\r")


def _ragged_line(data: bytes) -> tuple[int, str]:
    """The first line whose field count is not 7 (error path only: Polars refuses the chunk without saying where)."""
    for number, line in enumerate(data.splitlines()):
        if line.count(b",") != len(COLUMNS) - 1:
            return number, line.decode(errors="replace")[:200]
    return -1, ""


def _chunks(data: bytes, size: int, start: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges of `data` from `start`, about `size` bytes each, cut just after a newline."""
    bounds = [start]
    while bounds[-1] < len(data):
        cut = data.find(b"\n", min(bounds[-1] + size, len(data)) - 1)
        bounds.append(len(data) if cut < 0 else cut + 1)
    return list(pairwise(bounds))


def parse_agg_trades_csv(data: bytes, source: str, period: tuple[int, int] | None = None) -> pl.DataFrame:
    """CSV bytes -> trades in lsq.schema.TRADE_SCHEMA, sorted by agg_trade_id, or BulkFileError naming the line.

    `period` ([start_ms, end_ms), from the file name) also requires every transact_time to lie inside it. Large
    inputs (a month of BTC is ~2 GB of text) are parsed in chunks of CHUNK_BYTES, so only one chunk is ever held as
    strings; nothing is returned unless every chunk is valid.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return pl.DataFrame(schema=TRADE_SCHEMA)
    first = _first_line(data)
    has_header = not first[:1].isdigit()
    if has_header and first.decode(errors="replace").strip().lower() != HEADER:
        raise BulkFileError(f"{source} line 1: unexpected header {first[:200]!r}; expected {HEADER!r}")
    skip = data.find(b"\n") + 1 if has_header else 0
    first_line = 2 if has_header else 1
    frames = []
    for start, end in _chunks(data, CHUNK_BYTES, skip):
        line = first_line + data.count(b"\n", skip, start)
        frames.append(_parse_chunk(data[start:end], source, line, period))
    return in_id_order(pl.concat(frames)) if frames else pl.DataFrame(schema=TRADE_SCHEMA)


def _parse_chunk(chunk: bytes, source: str, first_line: int, period: tuple[int, int] | None) -> pl.DataFrame:
    """One chunk of whole lines; `first_line` is the file line number of its first line (for error messages)."""
    typed = _parse_valid_chunk(chunk, period)
    if typed is not None:
        return typed
    try:
        raw = pl.read_csv(
            io.BytesIO(chunk),
            has_header=False,
            new_columns=COLUMNS,
            schema=dict.fromkeys(COLUMNS, pl.String()),
            quote_char=None,
        )
    except pl.exceptions.ComputeError as exc:
        index, text = _ragged_line(chunk)
        if index >= 0:
            raise BulkFileError(
                f"{source} line {first_line + index}: expected 7 comma-separated fields, got {text!r}"
            ) from None
        raise BulkFileError(f"{source}: cannot parse as CSV: {exc}") from None
    return _typed_trades(raw, source, first_line, period)


def _problems() -> list[tuple[str, pl.Expr]]:
    """(description, expression true on a bad row) in the order they are reported."""
    maker = pl.col("is_buyer_maker").str.to_lowercase()
    short = pl.any_horizontal(*[pl.col(c).is_null() for c in COLUMNS])
    checks: list[tuple[str, pl.Expr]] = [("expected 7 comma-separated fields (empty or short line)", short)]
    checks += [
        (f"{c} must be a non-negative integer", ~pl.col(c).str.contains(_INT).fill_null(False))
        for c in ("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time")
    ]
    checks += [
        (f"{c} must be a decimal with at most 8 decimals", ~pl.col(c).str.contains(DECIMAL_PATTERN).fill_null(False))
        for c in ("price", "quantity")
    ]
    checks.append(("is_buyer_maker must be true or false", ~maker.is_in(["true", "false"]).fill_null(False)))
    return checks


_FAST_SCHEMA = {c: pl.String() if c in ("price", "quantity", "is_buyer_maker") else pl.Int64() for c in COLUMNS}
_NOT_IN_VALID_ROWS = (b"+", b"-", b" ", b"\t")  # no sign or blank in any field Binance prints


def _parse_valid_chunk(chunk: bytes, period: tuple[int, int] | None) -> pl.DataFrame | None:
    """The chunk's trades when every row is valid, else None (the string path then finds and names the bad line).

    Integers are parsed straight into Int64 (half the cost of checking them as text first); a chunk without signs
    or blanks holds only digit strings there, so the same rows pass as with the text checks.
    """
    if any(c in chunk for c in _NOT_IN_VALID_ROWS):
        return None
    try:
        raw = pl.read_csv(
            io.BytesIO(chunk), has_header=False, new_columns=COLUMNS, schema=_FAST_SCHEMA, quote_char=None
        )
    except pl.exceptions.ComputeError:
        return None
    ints = [pl.col(c) >= 10**18 for c in ("agg_trade_id", "first_trade_id", "last_trade_id", "transact_time")]
    decimals = [~pl.col(c).str.contains(DECIMAL_PATTERN) for c in ("price", "quantity")]
    maker = pl.col("is_buyer_maker").str.to_lowercase()
    bad = [*ints, *decimals, ~maker.is_in(["true", "false"]), *[pl.col(c).is_null() for c in COLUMNS]]
    if raw.select(pl.any_horizontal(*bad).fill_null(True).any()).item():
        return None
    typed = raw.with_columns(
        pl.col("price").cast(TRADE_SCHEMA["price"]),
        pl.col("quantity").cast(TRADE_SCHEMA["quantity"]),
        (maker == "true").alias("is_buyer_maker"),
    )
    if typed.select(pl.any_horizontal(*[expr for _, expr in _semantic(period)]).any()).item():
        return None
    return in_id_order(typed)


def _semantic(period: tuple[int, int] | None) -> list[tuple[str, pl.Expr]]:
    """(description, expression true on a bad row) over typed trades, in the order they are reported."""
    t = pl.col("transact_time")
    semantic: list[tuple[str, pl.Expr]] = [
        ("price must be positive", pl.col("price") <= 0),
        ("last_trade_id must be >= first_trade_id", pl.col("last_trade_id") < pl.col("first_trade_id")),
        ("transact_time must be epoch milliseconds", (t < _MIN_MS) | (t >= _MAX_MS)),
    ]
    if period is not None:
        start, end = period
        semantic.append(
            (
                f"transact_time outside the file's period {format_day(start)}..{format_day(end - 1)}",
                (t < start) | (t >= end),
            )
        )
    return semantic


def _typed_trades(raw: pl.DataFrame, source: str, offset: int, period: tuple[int, int] | None) -> pl.DataFrame:
    checks = _problems()
    bad = raw.select(pl.any_horizontal(*[expr for _, expr in checks]).arg_true().first()).item()
    if bad is not None:
        row = raw.row(bad, named=True)
        reasons = [text for text, expr in checks if raw.slice(bad, 1).select(expr).item()][:1]
        raise BulkFileError(f"{source} line {bad + offset}: {'; '.join(reasons)} (row {_show(row)})")
    typed = raw.select(
        pl.col("agg_trade_id").cast(pl.Int64),
        pl.col("price").cast(TRADE_SCHEMA["price"]),
        pl.col("quantity").cast(TRADE_SCHEMA["quantity"]),
        pl.col("first_trade_id").cast(pl.Int64),
        pl.col("last_trade_id").cast(pl.Int64),
        pl.col("transact_time").cast(pl.Int64),
        (pl.col("is_buyer_maker").str.to_lowercase() == "true").alias("is_buyer_maker"),
    )
    semantic = _semantic(period)
    bad = typed.select(pl.any_horizontal(*[expr for _, expr in semantic]).arg_true().first()).item()
    if bad is not None:
        reasons = [text for text, expr in semantic if typed.slice(bad, 1).select(expr).item()]
        raise BulkFileError(
            f"{source} line {bad + offset}: {'; '.join(reasons)} (row {_show(raw.row(bad, named=True))})"
        )
    return in_id_order(typed)


def in_id_order(trades: pl.DataFrame) -> pl.DataFrame:
    """`trades` sorted by agg_trade_id: as they are when a file lists them in order (Binance's do), checked in one
    pass instead of sorted again (a sort was a fifth of parsing a file)."""
    if trades["agg_trade_id"].is_sorted():
        return trades.with_columns(pl.col("agg_trade_id").set_sorted())
    return trades.sort("agg_trade_id")


def _show(row: dict[str, str | None]) -> str:
    return ",".join("" if v is None else str(v) for v in row.values())[:200]


def read_agg_trades_file(path: Path, period: tuple[int, int] | None = None) -> pl.DataFrame:
    """A local .csv or .zip public-data file -> trades (see parse_agg_trades_csv)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BulkFileError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_bytes(data, str(path), period)


def parse_bytes(data: bytes, source: str, period: tuple[int, int] | None = None) -> pl.DataFrame:
    """Zip (recognised by content) or plain CSV bytes -> trades."""
    if data[:4] == b"PK\x03\x04":
        member, data = unzip_single_csv(data, source)
        source = f"{source}:{member}"
    return parse_agg_trades_csv(data, source, period)


# -- checksums and download -------------------------------------------------------------------------------------


def verify_checksum(data: bytes, checksum_text: str, filename: str) -> None:
    """Check `data` against a `.CHECKSUM` file ("<sha256 hex>  <filename>"), raising BulkFileError on mismatch."""
    parts = checksum_text.split()
    if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise BulkFileError(f"{filename}.CHECKSUM: not a sha256 checksum line: {checksum_text[:120]!r}")
    if len(parts) > 1 and Path(parts[-1].lstrip("*")).name != filename:
        raise BulkFileError(f"{filename}.CHECKSUM names another file: {parts[-1]!r}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != parts[0].lower():
        raise BulkFileError(f"{filename}: sha256 {actual} does not match its .CHECKSUM {parts[0].lower()}")


def daily_file_url(data_url: str, symbol: str, day_ms: int) -> str:
    """`{data_url}/futures/um/daily/aggTrades/{SYMBOL}/{SYMBOL}-aggTrades-{YYYY-MM-DD}.zip`."""
    name = f"{symbol}-aggTrades-{format_day(day_ms)}.zip"
    return f"{data_url.rstrip('/')}/futures/um/daily/aggTrades/{symbol}/{name}"


async def _get_bytes(session: aiohttp.ClientSession, url: str) -> bytes | None:
    async with session.get(url) as response:
        if response.status == 404:
            return None
        if response.status != 200:
            text = (await response.text())[:200]
            raise BulkFileError(f"GET {url}: HTTP {response.status} {text}")
        return await response.read()


async def download_daily(
    session: aiohttp.ClientSession, data_url: str, symbol: str, day_ms: int
) -> pl.DataFrame | None:
    """One UTC day of a symbol's aggTrades from the public-data site, checksum-verified and parsed.

    None when the site has no file for that day (not published yet, or before the symbol's listing).
    """
    if day_ms % DAY_MS:
        raise ValueError(f"{day_ms} is not a UTC midnight")
    url = daily_file_url(data_url, symbol, day_ms)
    data = await _get_bytes(session, url)
    if data is None:
        return None
    checksum = await _get_bytes(session, url + ".CHECKSUM")
    if checksum is None:
        raise BulkFileError(f"GET {url}.CHECKSUM: not found, cannot verify {url}")
    filename = url.rsplit("/", 1)[1]
    verify_checksum(data, checksum.decode(errors="replace"), filename)
    return await asyncio.to_thread(parse_bytes, data, filename, (day_ms, day_ms + DAY_MS))
