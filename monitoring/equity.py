"""The equity curve: one sample a minute per account, with returns that do not count deposits as gains.

A transfer (income type TRANSFER: deposits positive, withdrawals negative) is capital, not return. Returns are
time-weighted: between two samples the flows F booked in (t0, t1] are taken as arriving at the start, so
r = E1 / (E0 + F) − 1, and the first deposit into an empty account is no return at all. The wealth index
Π(1 + r) gives the cumulative return and the drawdown; PnL is ΔE − F. Sharpe is over daily (UTC) returns, annualised
with √365 because crypto trades every day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from lsq.timelabels import DAY_MS, MINUTE_MS

FLOW_TYPES = ("TRANSFER",)


def minute_samples(snapshots: pl.DataFrame) -> pl.DataFrame:
    """The last snapshot of every minute: `minute_ms, time_ms, equity` (Float64; the curve is a measure)."""
    return (
        snapshots.sort("time_ms")
        .group_by((pl.col("time_ms") // MINUTE_MS * MINUTE_MS).alias("minute_ms"), maintain_order=True)
        .agg(pl.col("time_ms").last(), pl.col("equity").last().cast(pl.Float64))
        .sort("minute_ms")
    )


def transfers(income: pl.DataFrame) -> pl.DataFrame:
    """Capital flows from the income records: `time_ms, amount` (Float64)."""
    return (
        income.filter(pl.col("income_type").is_in(FLOW_TYPES))
        .select("time_ms", pl.col("income").cast(pl.Float64).alias("amount"))
        .sort("time_ms")
    )


CURVE_SCHEMA: dict[str, pl.DataType] = {
    "minute_ms": pl.Int64(),
    "time_ms": pl.Int64(),
    "equity": pl.Float64(),
    "flow": pl.Float64(),
    "pnl": pl.Float64(),
    "ret": pl.Float64(),
    "wealth": pl.Float64(),
    "peak": pl.Float64(),
    "cum_return": pl.Float64(),
    "drawdown": pl.Float64(),
}


def equity_curve(
    snapshots: pl.DataFrame, income: pl.DataFrame, previous: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Minute curve: `minute_ms, time_ms, equity, flow, pnl, ret, wealth, peak, cum_return, drawdown`.

    `flow` is the net transfer since the previous sample. Without `previous` the first sample takes every transfer
    up to it (what the account started with) and has no return; with `previous` (the last row of a stored curve)
    the new samples continue it: flows after its time, returns from its equity, wealth and peak carried on.
    """
    samples = minute_samples(snapshots)
    moves = transfers(income)
    if previous is not None:
        samples = samples.filter(pl.col("minute_ms") > previous["minute_ms"])
        moves = moves.filter(pl.col("time_ms") > previous["time_ms"])
    if samples.height == 0:
        return pl.DataFrame(schema=CURVE_SCHEMA)
    flows = moves.with_columns(pl.col("amount").cum_sum().alias("cum_flow"))
    if flows.height:
        samples = samples.join_asof(flows.select("time_ms", "cum_flow"), on="time_ms", strategy="backward")
    else:
        samples = samples.with_columns(pl.lit(None, dtype=pl.Float64).alias("cum_flow"))
    prev_equity = pl.col("equity").shift(1).fill_null(0.0 if previous is None else float(previous["equity"]))
    curve = samples.with_columns(pl.col("cum_flow").fill_null(0.0)).with_columns(
        (pl.col("cum_flow") - pl.col("cum_flow").shift(1).fill_null(0.0)).alias("flow")
    )
    base = prev_equity + pl.col("flow")
    curve = curve.with_columns(
        (pl.col("equity") - prev_equity - pl.col("flow")).alias("pnl"),
        pl.when(base > 0).then(pl.col("equity") / base - 1).otherwise(0.0).alias("ret"),
    )
    if previous is None:  # the first sample has no previous one: no PnL or return, not the opening balance
        first = pl.int_range(pl.len()) == 0
        curve = curve.with_columns(
            pl.when(first).then(0.0).otherwise(pl.col("pnl")).alias("pnl"),
            pl.when(first).then(0.0).otherwise(pl.col("ret")).alias("ret"),
        )
        return _with_wealth(curve)
    return _with_wealth(curve, float(previous["wealth"]), float(previous["peak"]))


def _with_wealth(curve: pl.DataFrame, wealth0: float = 1.0, peak0: float = 1.0) -> pl.DataFrame:
    wealth = wealth0 * (1 + pl.col("ret")).cum_prod()
    out = curve.with_columns(wealth.alias("wealth")).with_columns(
        pl.max_horizontal(pl.col("wealth").cum_max(), pl.lit(peak0)).alias("peak")
    )
    return out.with_columns(
        (pl.col("wealth") - 1).alias("cum_return"),
        (pl.col("wealth") / pl.col("peak") - 1).alias("drawdown"),
    ).select(list(CURVE_SCHEMA))


def in_range(curve: pl.DataFrame, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
    """The curve over [start_ms, end_ms), rebased so cumulative return and drawdown start at 0 at its first sample."""
    part = curve
    if start_ms is not None:
        part = part.filter(pl.col("minute_ms") >= start_ms)
    if end_ms is not None:
        part = part.filter(pl.col("minute_ms") < end_ms)
    first = pl.int_range(pl.len()) == 0
    part = part.with_columns(
        pl.when(first).then(0.0).otherwise(pl.col("ret")).alias("ret"),
        pl.when(first).then(0.0).otherwise(pl.col("pnl")).alias("pnl"),
        pl.when(first).then(0.0).otherwise(pl.col("flow")).alias("flow"),
    )
    return _with_wealth(part)


def daily(curve: pl.DataFrame) -> pl.DataFrame:
    """Per UTC day: `day, start_equity, end_equity, transfers, pnl, ret` (ret compounds the day's returns)."""
    return (
        curve.group_by((pl.col("minute_ms") // DAY_MS * DAY_MS).alias("day_ms"), maintain_order=True)
        .agg(
            pl.col("equity").first().alias("start_equity"),
            pl.col("equity").last().alias("end_equity"),
            pl.col("flow").sum().alias("transfers"),
            pl.col("pnl").sum(),
            ((1 + pl.col("ret")).product() - 1).alias("ret"),
        )
        .sort("day_ms")
        .with_columns(pl.from_epoch("day_ms", time_unit="ms").dt.strftime("%Y-%m-%d").alias("day"))
    )


@dataclass(frozen=True)
class CurveSummary:
    start_ms: int | None
    end_ms: int | None
    start_equity: float | None
    end_equity: float | None
    transfers: float
    pnl: float
    cum_return: float
    max_drawdown: float
    sharpe: float | None
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sharpe(daily_returns: pl.Series) -> float | None:
    """Annualised Sharpe of daily returns (risk-free 0); None for fewer than 2 days or no variation."""
    if daily_returns.len() < 2:
        return None
    std = daily_returns.std()
    mean = daily_returns.mean()
    if std is None or mean is None or not float(std) > 0:  # type: ignore[arg-type]
        return None
    return float(mean) / float(std) * math.sqrt(365)  # type: ignore[arg-type]


def summarize(curve: pl.DataFrame, start_ms: int | None = None, end_ms: int | None = None) -> CurveSummary:
    """Return, PnL, transfers, Sharpe and max drawdown over [start_ms, end_ms)."""
    part = in_range(curve, start_ms, end_ms)
    if part.height == 0:
        return CurveSummary(start_ms, end_ms, None, None, 0.0, 0.0, 0.0, 0.0, None, 0)
    return CurveSummary(
        start_ms=int(part["minute_ms"][0]),
        end_ms=int(part["minute_ms"][-1]),
        start_equity=float(part["equity"][0]),
        end_equity=float(part["equity"][-1]),
        transfers=float(part["flow"].sum()),
        pnl=float(part["pnl"].sum()),
        cum_return=float(part["cum_return"][-1]),
        max_drawdown=float(part["drawdown"].min()),  # type: ignore[arg-type]
        sharpe=sharpe(daily(part)["ret"]),
        samples=part.height,
    )
