"""What an account holds against its target, what it is exposed to and how healthy it is: pure functions.

Everything is valued at the mark price, never the entry price. Deviation is measured in notional, per symbol
|current − target| × mark, and in total as a share of the target book's gross notional, so a symbol whose target is 0
contributes its whole held notional and never a "100 %" of nothing. Ratios that have no meaning (a book of nothing, an
account with no margin balance) are None rather than a division error or an infinity.

Frames: positions `symbol, position_amt, mark_price` (Float64 or Decimal); targets `symbol, target_position` and
optionally `price` (the decision price, used where no mark is known).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import polars as pl


def _f(frame: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64) if name in frame.columns else pl.lit(None, dtype=pl.Float64)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(frozen=True)
class DeviationSummary:
    """Total deviation: notional off target, the target book's gross, and their ratio (None for an empty book)."""

    deviation_notional: float
    target_gross_notional: float
    share: float | None
    largest_symbol: str | None
    largest_deviation_notional: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def deviation_by_symbol(positions: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Per symbol of held ∪ targeted: current and target quantity and notional at mark, and the deviation.

    A symbol absent from one side counts as 0 there. Without a mark (a target never held and not priced by the
    snapshot) the target's decision price values it. `share_of_target_gross` is the symbol's deviation over the whole
    target book's gross, so it is defined for targets of 0.
    """
    held = (
        positions.select(
            pl.col("symbol"),
            _f(positions, "position_amt").alias("current"),
            _f(positions, "mark_price").alias("mark_price"),
        )
        .group_by("symbol", maintain_order=True)  # hedge mode holds a LONG and a SHORT row: the net counts
        .agg(pl.col("current").sum(), pl.col("mark_price").max())
    )
    wanted = targets.select(
        pl.col("symbol"),
        _f(targets, "target_position").alias("target"),
        _f(targets, "price").alias("decision_price"),
    )
    joined = held.join(wanted, on="symbol", how="full", coalesce=True)
    price = pl.coalesce(
        pl.when(pl.col("mark_price") > 0).then(pl.col("mark_price")),
        pl.when(pl.col("decision_price") > 0).then(pl.col("decision_price")),
    )
    out = joined.with_columns(
        pl.col("current").fill_null(0.0),
        pl.col("target").fill_null(0.0),
        price.alias("price"),
    ).with_columns(
        (pl.col("current") * pl.col("price")).alias("current_notional"),
        (pl.col("target") * pl.col("price")).alias("target_notional"),
        ((pl.col("current") - pl.col("target")).abs() * pl.col("price")).alias("deviation_notional"),
    )
    gross = out.select(pl.col("target_notional").abs().sum()).item() or 0.0
    share = (pl.col("deviation_notional") / gross) if gross > 0 else pl.lit(None, dtype=pl.Float64)
    return out.with_columns(share.alias("share_of_target_gross")).sort("symbol")


def deviation_summary(by_symbol: pl.DataFrame) -> DeviationSummary:
    """Totals of `deviation_by_symbol`; a symbol without any price is left out (it cannot be valued)."""
    valued = by_symbol.filter(pl.col("deviation_notional").is_not_null())
    total = float(valued["deviation_notional"].sum() or 0.0)
    gross = float(valued["target_notional"].abs().sum() or 0.0)
    largest = valued.sort("deviation_notional", descending=True).head(1)
    has = largest.height > 0 and float(largest["deviation_notional"][0]) > 0
    return DeviationSummary(
        deviation_notional=total,
        target_gross_notional=gross,
        share=_ratio(total, gross) if gross > 0 else (0.0 if total == 0 else None),
        largest_symbol=str(largest["symbol"][0]) if has else None,
        largest_deviation_notional=float(largest["deviation_notional"][0]) if has else 0.0,
    )


@dataclass(frozen=True)
class Exposure:
    gross: float
    net: float
    long: float
    short: float
    largest_symbol: str | None
    largest_share: float | None
    leverage: float | None
    positions: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exposure(positions: pl.DataFrame, equity: Decimal | float) -> Exposure:
    """Gross, net, long and short notional at mark; the largest symbol's share of gross; leverage = gross / equity."""
    notional = positions.select(
        pl.col("symbol"), (_f(positions, "position_amt") * _f(positions, "mark_price")).fill_null(0.0).alias("n")
    ).filter(pl.col("n") != 0)
    long = float(notional.filter(pl.col("n") > 0)["n"].sum() or 0.0)
    short = -float(notional.filter(pl.col("n") < 0)["n"].sum() or 0.0)
    gross = long + short
    top = notional.with_columns(pl.col("n").abs()).sort(["n", "symbol"], descending=[True, False]).head(1)
    return Exposure(
        gross=gross,
        net=long - short,
        long=long,
        short=short,
        largest_symbol=str(top["symbol"][0]) if top.height else None,
        largest_share=_ratio(float(top["n"][0]), gross) if top.height else None,
        leverage=_ratio(gross, float(equity)),
        positions=notional.height,
    )


def equity(wallet_balance: Decimal, unrealized_pnl: Decimal) -> Decimal:
    """What the account is worth now: wallet plus unrealized PnL (the old monitor left the latter out)."""
    return wallet_balance + unrealized_pnl


@dataclass(frozen=True)
class Health:
    margin_balance: Decimal
    margin_ratio: float | None
    available_share: float | None
    unrealized_pnl_share: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "margin_balance": str(self.margin_balance)}


def health(
    wallet_balance: Decimal, unrealized_pnl: Decimal, maint_margin: Decimal, available_balance: Decimal
) -> Health:
    """Binance's margin ratio = maintenance margin / margin balance (liquidation at 100 %); available balance and
    unrealized PnL as shares of the margin balance. None when the margin balance is not positive: the account is
    then past liquidation and no ratio describes it."""
    balance = equity(wallet_balance, unrealized_pnl)
    den = float(balance)
    return Health(
        margin_balance=balance,
        margin_ratio=_ratio(float(maint_margin), den),
        available_share=_ratio(float(available_balance), den),
        unrealized_pnl_share=_ratio(float(unrealized_pnl), den),
    )
