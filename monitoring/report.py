"""The strategy report of one account over any range (a day, a month): what trading earned and what it cost,
measured from the account's own fills, income records and snapshots, never from assumed rates.

- By symbol: turnover (Σ fill notional), fees paid (−Σ COMMISSION), funding received and paid (FUNDING_FEE), and PnL
  split into price (REALIZED_PNL + the change of unrealized PnL over the range, from the snapshots at or before its
  bounds), funding and fees; total = price + funding − fees.
- Per UTC day and in total: the same over every income record, those without a symbol included; other income
  (insurance clear, ...) is added to the total and listed apart; transfers are capital, reported but never PnL.
- Per window (the target file an order was sent for, read from the executor's client order id; a fill whose order
  is unknown belongs to the newest target decided before it): implementation shortfall of the window's fills
  against the target file's decision price and against the arrival mark (the latest stored mark at or before the
  symbol's first fill in the window), in USDT (positive = cost) and in bps of the filled notional at the reference;
  and the deviation from the window's targets at its last snapshot. Tracking error is the root mean square of those
  end-of-window deviation shares.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import DAY_MS, WINDOW_MS
from monitoring.store import MONEY, AccountStore
from monitoring.targets import read_targets

PNL_TYPES = ("REALIZED_PNL", "FUNDING_FEE", "COMMISSION")
FLOW_TYPES = ("TRANSFER",)

BY_SYMBOL_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "fills": pl.UInt32(),
    "turnover": MONEY,
    "fees": MONEY,
    "funding_received": MONEY,
    "funding_paid": MONEY,
    "funding": MONEY,
    "realized_pnl": MONEY,
    "unrealized_change": MONEY,
    "price_pnl": MONEY,
    "total_pnl": MONEY,
}


def _sum_where(cond: pl.Expr, value: str = "income") -> pl.Expr:
    return pl.when(cond).then(pl.col(value)).otherwise(pl.lit(0).cast(MONEY)).sum()


def _unrealized_at(snapshots: pl.DataFrame, positions: pl.DataFrame, at_ms: int) -> pl.DataFrame:
    """`symbol, unrealized_pnl` of the last snapshot at or before `at_ms` (empty before the first)."""
    before = snapshots.filter(pl.col("time_ms") <= at_ms)
    if before.height == 0:
        return pl.DataFrame(schema={"symbol": pl.String(), "unrealized_pnl": MONEY})
    t = before["time_ms"].max()
    return positions.filter(pl.col("time_ms") == t).group_by("symbol").agg(pl.col("unrealized_pnl").sum().cast(MONEY))


def pnl_by_symbol(
    fills: pl.DataFrame,
    income: pl.DataFrame,
    snapshots: pl.DataFrame,
    positions: pl.DataFrame,
    start_ms: int,
    end_ms: int,
) -> pl.DataFrame:
    """Per symbol over [start_ms, end_ms): turnover, fees, funding, and PnL split into price, funding and fees."""
    f = fills.filter(pl.col("time_ms").is_between(start_ms, end_ms, closed="left"))
    i = income.filter(pl.col("time_ms").is_between(start_ms, end_ms, closed="left") & (pl.col("symbol") != ""))
    traded = f.group_by("symbol").agg(pl.len().alias("fills"), pl.col("quote_qty").sum().cast(MONEY).alias("turnover"))
    kind = pl.col("income_type")
    booked = i.group_by("symbol").agg(
        (-_sum_where(kind == "COMMISSION")).alias("fees"),
        _sum_where((kind == "FUNDING_FEE") & (pl.col("income") > 0)).alias("funding_received"),
        (-_sum_where((kind == "FUNDING_FEE") & (pl.col("income") < 0))).alias("funding_paid"),
        _sum_where(kind == "FUNDING_FEE").alias("funding"),
        _sum_where(kind == "REALIZED_PNL").alias("realized_pnl"),
    )
    u0 = _unrealized_at(snapshots, positions, start_ms - 1).rename({"unrealized_pnl": "u0"})
    u1 = _unrealized_at(snapshots, positions, end_ms - 1).rename({"unrealized_pnl": "u1"})
    zero = pl.lit(0).cast(MONEY)
    out = (
        traded.join(booked, on="symbol", how="full", coalesce=True)
        .join(u0, on="symbol", how="full", coalesce=True)
        .join(u1, on="symbol", how="full", coalesce=True)
        .with_columns(
            pl.col("fills").fill_null(0).cast(pl.UInt32),
            *[pl.col(c).fill_null(zero).cast(MONEY) for c in ("turnover", "fees", "funding_received", "funding_paid")],
            *[pl.col(c).fill_null(zero).cast(MONEY) for c in ("funding", "realized_pnl", "u0", "u1")],
        )
        .with_columns((pl.col("u1") - pl.col("u0")).cast(MONEY).alias("unrealized_change"))
        .with_columns((pl.col("realized_pnl") + pl.col("unrealized_change")).cast(MONEY).alias("price_pnl"))
        .with_columns((pl.col("price_pnl") + pl.col("funding") - pl.col("fees")).cast(MONEY).alias("total_pnl"))
    )
    return out.select(list(BY_SYMBOL_SCHEMA)).sort("symbol")


def _totals(daily: pl.DataFrame) -> dict[str, Any]:
    """The range's totals: the days' sums (unrealized changes telescope), exact; zeros for a range without data."""
    if daily.height == 0:
        return {"fills": 0, **{c: "0" for c in DAILY_MONEY}}
    return {"fills": int(daily["fills"].sum()), **{c: str(daily[c].sum()) for c in DAILY_MONEY}}


DAILY_MONEY = (
    "turnover",
    "fees",
    "funding_received",
    "funding_paid",
    "funding",
    "realized_pnl",
    "unrealized_change",
    "price_pnl",
    "total_pnl",
    "other_income",
    "transfers",
)

WINDOW_SCHEMA: dict[str, pl.DataType] = {
    "window_ms": pl.Int64(),
    "symbol": pl.String(),
    "fills": pl.UInt32(),
    "filled_qty": pl.Float64(),
    "filled_notional": pl.Float64(),
    "fees": pl.Float64(),
    "decision_price": pl.Float64(),
    "arrival_price": pl.Float64(),
    "shortfall_decision": pl.Float64(),
    "shortfall_decision_bps": pl.Float64(),
    "shortfall_arrival": pl.Float64(),
    "shortfall_arrival_bps": pl.Float64(),
}


def _bps(cost: str, ref: str) -> pl.Expr:
    return pl.when(pl.col(ref) > 0).then(pl.col(cost) / pl.col(ref) * 1e4)


# executors/router.py's client_order_id: lsqXXXX-WWWW-...: WWWW is the window's start // 5 min in base 36.
_CLIENT_WINDOW = re.compile(r"^lsq[0-9a-z]{4}-([0-9a-z]+)-")


def order_windows(orders: pl.DataFrame) -> pl.DataFrame:
    """`symbol, order_id, order_window_ms`: the decision time of the targets each of our orders was sent for."""
    known: dict[str, int] = {}
    for cid in orders["client_order_id"].drop_nulls().unique().to_list():
        match = _CLIENT_WINDOW.match(cid)
        if match:
            known[cid] = int(match.group(1), 36) * WINDOW_MS + WINDOW_MS
    windows = pl.DataFrame(
        {"client_order_id": list(known), "order_window_ms": list(known.values())},
        schema={"client_order_id": pl.String(), "order_window_ms": pl.Int64()},
    )
    return orders.join(windows, on="client_order_id").select("symbol", "order_id", "order_window_ms").unique()


def shortfall_by_window(
    fills: pl.DataFrame, positions: pl.DataFrame, targets: pl.DataFrame, end_ms: int, orders: pl.DataFrame
) -> pl.DataFrame:
    """Per (window, symbol) with fills: quantity, notional, fees and shortfall against decision and arrival prices.
    A fill belongs to the window its order was sent for (`orders`, the stored order log), so a TWAP running late,
    past the next target's decision, is still measured against its own targets; else to the newest one before it."""
    if targets.height == 0:
        return pl.DataFrame(schema=WINDOW_SCHEMA)
    starts = targets.select("window_ms").unique().sort("window_ms")
    sent_for = order_windows(orders).join(starts, left_on="order_window_ms", right_on="window_ms", how="semi")
    f = (
        fills.filter(pl.col("time_ms") < end_ms)
        .sort("time_ms")
        .join_asof(starts, left_on="time_ms", right_on="window_ms", strategy="backward")
        .join(sent_for, on=["symbol", "order_id"], how="left")
        .with_columns(pl.coalesce("order_window_ms", "window_ms").alias("window_ms"))
        .drop("order_window_ms")
        .filter(pl.col("window_ms").is_not_null())
    )
    if f.height == 0:
        return pl.DataFrame(schema=WINDOW_SCHEMA)
    decided = targets.select("window_ms", "symbol", pl.col("price").cast(pl.Float64).alias("decision"))
    first = f.group_by("window_ms", "symbol").agg(pl.col("time_ms").min().alias("first_fill"))
    marks = positions.select(
        pl.col("time_ms").alias("mark_ms"), "symbol", pl.col("mark_price").cast(pl.Float64).alias("arrival")
    ).filter(pl.col("arrival") > 0)
    arrival = (
        first.sort("first_fill")
        .join_asof(
            marks.sort("mark_ms"),
            left_on="first_fill",
            right_on="mark_ms",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        .select("window_ms", "symbol", "arrival")
    )
    sign = pl.when(pl.col("side") == "BUY").then(1.0).otherwise(-1.0)
    q, p = pl.col("qty").cast(pl.Float64), pl.col("price").cast(pl.Float64)
    rows = (
        f.join(decided, on=["window_ms", "symbol"], how="left")
        .join(arrival, on=["window_ms", "symbol"], how="left")
        .group_by("window_ms", "symbol")
        .agg(
            pl.len().alias("fills"),
            (sign * q).sum().alias("filled_qty"),
            (q * p).sum().alias("filled_notional"),
            pl.col("commission").cast(pl.Float64).sum().alias("fees"),
            pl.col("decision").first().alias("decision_price"),
            pl.col("arrival").first().alias("arrival_price"),
            (sign * q * (p - pl.col("decision"))).sum().alias("shortfall_decision"),
            (q * pl.col("decision")).sum().alias("_ref_d"),
            (sign * q * (p - pl.col("arrival"))).sum().alias("shortfall_arrival"),
            (q * pl.col("arrival")).sum().alias("_ref_a"),
        )
    )
    return (
        rows.with_columns(
            pl.when(pl.col("decision_price").is_not_null()).then(pl.col("shortfall_decision")),
            pl.when(pl.col("arrival_price").is_not_null()).then(pl.col("shortfall_arrival")),
        )
        .with_columns(
            _bps("shortfall_decision", "_ref_d").alias("shortfall_decision_bps"),
            _bps("shortfall_arrival", "_ref_a").alias("shortfall_arrival_bps"),
        )
        .select(list(WINDOW_SCHEMA))
        .sort("window_ms", "symbol")
    )


def deviation_by_window(
    snapshots: pl.DataFrame, positions: pl.DataFrame, targets: pl.DataFrame, end_ms: int
) -> pl.DataFrame:
    """Per window: total deviation from its targets (notional at mark, and share of the target gross) at the
    window's last snapshot before the next decision; windows without a snapshot are left out."""
    schema = {
        "window_ms": pl.Int64(),
        "snapshot_ms": pl.Int64(),
        "deviation_notional": pl.Float64(),
        "target_gross": pl.Float64(),
        "deviation_share": pl.Float64(),
    }
    if targets.height == 0:
        return pl.DataFrame(schema=schema)
    times = targets["window_ms"].unique().sort().to_list()
    bounds = pl.DataFrame({"window_ms": times, "next_ms": [*times[1:], end_ms]})
    snaps = snapshots.select(pl.col("time_ms").alias("snapshot_ms")).sort("snapshot_ms")
    last = (
        bounds.with_columns((pl.col("next_ms") - 1).alias("_probe"))
        .sort("_probe")
        .join_asof(snaps, left_on="_probe", right_on="snapshot_ms", strategy="backward")
        .filter(pl.col("snapshot_ms") >= pl.col("window_ms"))
        .select("window_ms", "snapshot_ms")
    )
    if last.height == 0:
        return pl.DataFrame(schema=schema)
    held = (
        positions.join(last, left_on="time_ms", right_on="snapshot_ms")
        .select(
            "window_ms",
            "symbol",
            pl.col("position_amt").cast(pl.Float64).alias("current"),
            pl.col("mark_price").cast(pl.Float64).alias("mark"),
        )
        .group_by("window_ms", "symbol")
        .agg(pl.col("current").sum(), pl.col("mark").first())
    )
    wanted = (
        targets.filter(pl.col("symbol").is_not_null())
        .join(last, on="window_ms")
        .select(
            "window_ms",
            "symbol",
            pl.col("target_position").cast(pl.Float64).alias("target"),
            pl.col("price").cast(pl.Float64).alias("decision"),
        )
    )
    price = pl.coalesce(
        pl.when(pl.col("mark") > 0).then(pl.col("mark")), pl.when(pl.col("decision") > 0).then(pl.col("decision"))
    )
    per = (
        held.join(wanted, on=["window_ms", "symbol"], how="full", coalesce=True)
        .with_columns(pl.col("current").fill_null(0.0), pl.col("target").fill_null(0.0), price.alias("price"))
        .group_by("window_ms")
        .agg(
            ((pl.col("current") - pl.col("target")).abs() * pl.col("price")).sum().alias("deviation_notional"),
            (pl.col("target").abs() * pl.col("price")).sum().alias("target_gross"),
        )
    )
    share = (
        pl.when(pl.col("target_gross") > 0)
        .then(pl.col("deviation_notional") / pl.col("target_gross"))
        .when(pl.col("deviation_notional") == 0)
        .then(0.0)
    )
    return (
        last.join(per, on="window_ms", how="left")
        .with_columns(pl.col("deviation_notional", "target_gross").fill_null(0.0))
        .with_columns(share.alias("deviation_share"))
        .select(list(schema))
        .sort("window_ms")
    )


@dataclass(frozen=True)
class StrategyReport:
    account_id: str
    start_ms: int
    end_ms: int
    totals: dict[str, Any]
    by_symbol: pl.DataFrame
    daily: pl.DataFrame
    windows: pl.DataFrame
    window_deviation: pl.DataFrame

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: money as exact strings, measures as numbers."""
        return {
            "account_id": self.account_id,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "totals": self.totals,
            "by_symbol": _records(self.by_symbol),
            "daily": _records(self.daily),
            "windows": _records(self.windows),
            "window_deviation": _records(self.window_deviation),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def write(self, directory: Path) -> list[Path]:
        """report.json and one CSV per table into `directory`, each written atomically."""
        written = [directory / "report.json"]
        atomic_write_text(written[0], self.to_json())
        for name in ("by_symbol", "daily", "windows", "window_deviation"):
            path = directory / f"{name}.csv"
            atomic_write_text(path, getattr(self, name).write_csv())
            written.append(path)
        return written


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    out = frame.with_columns(pl.col(c).cast(pl.String) for c, d in frame.schema.items() if isinstance(d, pl.Decimal))
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in out.to_dicts()
    ]


def _first_time(*frames: pl.DataFrame) -> int | None:
    times = [int(t) for f in frames if f.height and isinstance(t := f["time_ms"].min(), int)]
    return min(times) if times else None


def daily_totals(
    fills: pl.DataFrame,
    income: pl.DataFrame,
    snapshots: pl.DataFrame,
    positions: pl.DataFrame,
    start_ms: int,
    end_ms: int,
) -> pl.DataFrame:
    """The report's totals per UTC day of [start_ms, end_ms), from the first day holding any record on."""
    first = _first_time(
        fills.filter(pl.col("time_ms") < end_ms),
        income.filter(pl.col("time_ms") < end_ms),
        snapshots.filter(pl.col("time_ms") < end_ms),
    )
    if first is None:
        return pl.DataFrame()
    lo = max(start_ms, first - first % DAY_MS)
    days = pl.DataFrame({"day_ms": pl.int_range(lo - lo % DAY_MS, end_ms, DAY_MS, eager=True, dtype=pl.Int64)})
    days = days.with_columns(
        pl.max_horizontal("day_ms", pl.lit(start_ms)).alias("lo"),
        pl.min_horizontal(pl.col("day_ms") + DAY_MS, pl.lit(end_ms)).alias("hi"),
    )
    held = positions.group_by("time_ms").agg(pl.col("unrealized_pnl").sum().cast(MONEY).alias("u"))
    upnl = snapshots.select("time_ms").join(held, on="time_ms", how="left").fill_null(0).sort("time_ms")
    zero = pl.lit(0).cast(MONEY)

    def at(bound: str, name: str) -> pl.DataFrame:
        probe = days.select("day_ms", (pl.col(bound) - 1).alias("_t")).sort("_t")
        found = probe.join_asof(upnl, left_on="_t", right_on="time_ms", strategy="backward")
        return found.select("day_ms", pl.col("u").fill_null(zero).cast(MONEY).alias(name))

    day = (pl.col("time_ms") // DAY_MS * DAY_MS).alias("day_ms")
    in_range = pl.col("time_ms").is_between(start_ms, end_ms, closed="left")
    traded = (
        fills.filter(in_range)
        .group_by(day)
        .agg(pl.len().cast(pl.Int64).alias("fills"), pl.col("quote_qty").sum().cast(MONEY).alias("turnover"))
    )
    kind = pl.col("income_type")
    pnl_kinds = kind.is_in(PNL_TYPES)
    booked = (
        income.filter(in_range)
        .group_by(day)
        .agg(
            (-_sum_where(kind == "COMMISSION")).alias("fees"),
            _sum_where((kind == "FUNDING_FEE") & (pl.col("income") > 0)).alias("funding_received"),
            (-_sum_where((kind == "FUNDING_FEE") & (pl.col("income") < 0))).alias("funding_paid"),
            _sum_where(kind == "FUNDING_FEE").alias("funding"),
            _sum_where(kind == "REALIZED_PNL").alias("realized_pnl"),
            _sum_where(~pnl_kinds & ~kind.is_in(FLOW_TYPES)).alias("other_income"),
            _sum_where(kind.is_in(FLOW_TYPES)).alias("transfers"),
        )
    )
    money = ["turnover", "fees", "funding_received", "funding_paid", "funding", "realized_pnl", "other_income"]
    out = (
        days.select("day_ms")
        .join(traded, on="day_ms", how="left")
        .join(booked, on="day_ms", how="left")
        .join(at("lo", "u0"), on="day_ms")
        .join(at("hi", "u1"), on="day_ms")
        .with_columns(
            pl.col("fills").fill_null(0), *[pl.col(c).fill_null(zero).cast(MONEY) for c in [*money, "transfers"]]
        )
        .with_columns((pl.col("u1") - pl.col("u0")).cast(MONEY).alias("unrealized_change"))
        .with_columns((pl.col("realized_pnl") + pl.col("unrealized_change")).cast(MONEY).alias("price_pnl"))
        .with_columns(
            (pl.col("price_pnl") + pl.col("funding") - pl.col("fees") + pl.col("other_income"))
            .cast(MONEY)
            .alias("total_pnl")
        )
        .with_columns(pl.from_epoch("day_ms", time_unit="ms").dt.strftime("%Y-%m-%d").alias("day"))
    )
    return out.select("day", "fills", *DAILY_MONEY).sort("day")


def strategy_report(
    account_id: str,
    fills: pl.DataFrame,
    income: pl.DataFrame,
    snapshots: pl.DataFrame,
    positions: pl.DataFrame,
    targets: pl.DataFrame,
    orders: pl.DataFrame,
    start_ms: int,
    end_ms: int,
) -> StrategyReport:
    """The report over [start_ms, end_ms) from stored frames (pure; `account_report` reads them)."""
    if end_ms <= start_ms:
        raise ValueError(f"empty report range: end {end_ms} is not after start {start_ms}")
    by_symbol = pnl_by_symbol(fills, income, snapshots, positions, start_ms, end_ms)
    daily = daily_totals(fills, income, snapshots, positions, start_ms, end_ms)
    totals = _totals(daily)
    windows = shortfall_by_window(fills, positions, targets, end_ms, orders)
    deviation = deviation_by_window(snapshots, positions, targets, end_ms)
    shares = deviation["deviation_share"].drop_nulls()
    totals["tracking_error"] = math.sqrt(float((shares**2).mean())) if shares.len() else None  # type: ignore[arg-type]
    totals["windows_with_fills"] = windows["window_ms"].n_unique()
    ref = windows["filled_notional"].sum()
    for col in ("shortfall_decision", "shortfall_arrival"):
        totals[col] = float(windows[col].sum())
        totals[f"{col}_bps"] = float(windows[col].sum()) / float(ref) * 1e4 if ref else None
    return StrategyReport(
        account_id,
        start_ms,
        end_ms,
        totals,
        by_symbol,
        daily,
        windows,
        deviation,
    )


def account_report(paths: DataPaths, account_id: str, start_ms: int, end_ms: int) -> StrategyReport:
    """The report of a stored account; snapshots from a day before the range give the unrealized PnL it starts
    with (a store with a longer gap than that starts the range at 0)."""
    store = AccountStore(paths, account_id)
    targets = read_targets(paths, account_id, start_ms, end_ms)
    return strategy_report(
        account_id,
        store.read("fills", start_ms, end_ms),
        store.read("income", start_ms, end_ms),
        store.read("snapshots", start_ms - DAY_MS, end_ms),
        store.read("positions", start_ms - DAY_MS, end_ms),
        targets,
        store.read("orders", start_ms - DAY_MS, end_ms),
        start_ms,
        end_ms,
    )
