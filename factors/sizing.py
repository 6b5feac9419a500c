"""From alpha weights to signed target quantities per account, exact to the exchange's step sizes.

capital = totalWalletBalance + totalUnrealizedProfit (futures_account); gross = capital x gross_leverage;
target notional = gross x weight. With dollar neutrality the long and the short book are each scaled to gross / 2
(an alpha with only one side then has no neutral sizing and gives no positions). Each |notional| is capped at
max_symbol_share x gross; if the cap unbalances the books, the larger one is scaled down to the smaller.
quantity = notional / price rounded toward zero to the LOT_SIZE step (Decimal); |qty| < minQty or |qty| x price <
MIN_NOTIONAL gives 0, as does any symbol outside the current universe.

The file's schema lives in lsq.targets (the contract with execution); sizing writes through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from lsq.config import Account, Settings, SizingSettings
from lsq.exchange import rest_client
from lsq.exchange.rules import SymbolRules, parse_exchange_info, to_decimal
from lsq.paths import DataPaths
from lsq.symbols import to_exchange
from lsq.targets import TargetPosition, write_targets

log = logging.getLogger(__name__)
ZERO = Decimal(0)


@dataclass(frozen=True)
class AccountTargets:
    account_id: str
    capital: Decimal
    positions: list[TargetPosition]
    path: Path

    @property
    def gross_notional(self) -> Decimal:
        return sum((abs(p.target_notional) for p in self.positions), ZERO)


@dataclass(frozen=True)
class AccountOutcome:
    """What sizing did for one account: the written targets, or why there are none."""

    account_id: str
    status: Literal["written", "failed", "skipped"]
    targets: AccountTargets | None = None
    reason: str | None = None

    @property
    def path(self) -> Path | None:
        return self.targets.path if self.targets else None


@dataclass
class SizingReport:
    """Every configured account of the mode: written (its file), failed (the reason) or skipped (the reason)."""

    accounts: dict[str, AccountOutcome] = field(default_factory=dict)

    @property
    def written(self) -> list[AccountTargets]:
        return [o.targets for o in self.accounts.values() if o.targets is not None]

    @property
    def failed(self) -> dict[str, str]:
        return {a: o.reason or "" for a, o in self.accounts.items() if o.status == "failed"}

    @property
    def skipped(self) -> dict[str, str]:
        return {a: o.reason or "" for a, o in self.accounts.items() if o.status == "skipped"}


class SizingError(RuntimeError):
    """No account could be sized although some had credentials; `report` says why for each."""

    def __init__(self, message: str, report: SizingReport) -> None:
        super().__init__(message)
        self.report = report


# Pure maths


def account_capital(account: Mapping[str, Any]) -> Decimal:
    """Equity of a futures account: wallet balance plus unrealised profit."""
    missing = {"totalWalletBalance", "totalUnrealizedProfit"} - set(account)
    if missing:
        raise ValueError(f"futures_account() answer lacks {sorted(missing)}")
    return to_decimal(account["totalWalletBalance"], "totalWalletBalance") + to_decimal(
        account["totalUnrealizedProfit"], "totalUnrealizedProfit"
    )


def target_notionals(alpha: Mapping[str, float], capital: float, sizing: SizingSettings) -> dict[str, float]:
    """Signed notional per symbol (the alpha's names) before rounding; see the module docstring for the rules."""
    if capital < 0:
        raise ValueError(f"capital {capital} is negative: no positions can be sized")
    names = list(alpha)
    w = np.asarray([alpha[n] for n in names], dtype=float)
    if not np.isfinite(w).all():
        raise ValueError("alpha weights must be finite")
    gross = capital * sizing.gross_leverage
    total = np.abs(w).sum()
    if total == 0 or gross == 0:
        return {n: 0.0 for n in names}
    notional = gross * w / total
    if sizing.dollar_neutral:
        notional = _neutral(notional, gross / 2)
    cap = sizing.max_symbol_share * gross
    notional = np.clip(notional, -cap, cap)
    if sizing.dollar_neutral:
        notional = _neutral(notional, min(notional[notional > 0].sum(), -notional[notional < 0].sum()))
    return dict(zip(names, notional.tolist(), strict=True))


def _neutral(notional: np.ndarray, book: float) -> np.ndarray:
    """Scale the long and short books each to `book`; with one side empty nothing can be neutral: all zero."""
    longs, shorts = notional[notional > 0].sum(), -notional[notional < 0].sum()
    if longs == 0 or shorts == 0:
        return np.zeros_like(notional)
    scaled: np.ndarray = np.where(notional > 0, notional * (book / longs), notional * (book / shorts))
    return scaled


def quantize(notional: float, price: Decimal, flt: SymbolRules) -> Decimal:
    """Signed quantity for `notional` at `price`, toward zero on the step grid; 0 below minQty or MIN_NOTIONAL."""
    if price <= 0:
        raise ValueError(f"{flt.symbol}: price must be positive, got {price}")
    raw = to_decimal(notional, f"{flt.symbol} notional") / price
    qty = flt.floor_qty(raw, market=False)
    if abs(qty) * price < flt.min_notional:
        return ZERO
    return qty


def size_positions(
    alpha: Mapping[str, float],
    capital: Decimal,
    prices: Mapping[str, Decimal],
    filters: Mapping[str, SymbolRules],
    universe: Iterable[str],
    sizing: SizingSettings,
) -> list[TargetPosition]:
    """Target positions (exchange names, sorted) for every universe symbol and every symbol the alpha names.

    `alpha` and `universe` may use either spelling (btc-usdt or BTCUSDT); `prices` and `filters` use BTCUSDT.
    A universe symbol with a non-zero weight but no price or filter is an error: it cannot be sized safely.
    """
    members = {to_exchange(s) for s in universe}
    weights: dict[str, float] = {}
    for name, weight in alpha.items():
        weights[to_exchange(name)] = weights.get(to_exchange(name), 0.0) + float(weight)
    tradable = {s: w for s, w in weights.items() if s in members}
    notionals = target_notionals(tradable, float(capital), sizing)
    positions = []
    for symbol in sorted(members | set(weights)):
        price = prices.get(symbol)
        notional = notionals.get(symbol, 0.0)
        if notional != 0 and (price is None or symbol not in filters):
            raise ValueError(f"{symbol} has weight {weights[symbol]} but no {'price' if price is None else 'filters'}")
        qty = quantize(notional, price, filters[symbol]) if notional != 0 and price is not None else ZERO
        positions.append(TargetPosition(symbol, qty, qty * (price or ZERO), price or ZERO))
    return positions


def latest_prices(bars: pl.DataFrame) -> dict[str, Decimal]:
    """Last non-null close per symbol (BTCUSDT names), exact: Decimal columns go through their string form."""
    if bars.height == 0:
        return {}
    last = (
        bars.filter(pl.col("close").is_not_null())
        .sort("symbol", "open_time")
        .group_by("symbol")
        .agg(pl.col("close").last().cast(pl.String))
    )
    return {to_exchange(s): Decimal(c) for s, c in last.iter_rows()}


# Edge: ask the exchange, write the files


def write_account_targets(
    paths: DataPaths, account_id: str, window_ms: int, capital: Decimal, positions: list[TargetPosition]
) -> AccountTargets:
    path = write_targets(paths, account_id, window_ms, capital, positions)
    return AccountTargets(account_id, capital, positions, path)


def write_target_positions(
    settings: Settings,
    paths: DataPaths,
    window_ms: int,
    alpha: Mapping[str, float],
    prices: Mapping[str, Decimal],
    universe: Iterable[str],
    client_factory: Callable[..., Any] = rest_client,
) -> SizingReport:
    """Size and write the targets of every usable account; the report holds each account's file or reason.

    One account's failure (exchange error, bad answer) is recorded and does not stop the others. Raises SizingError
    only when accounts with credentials exist and none of them could be sized (the exchange's filters could not be
    read, or every account failed); accounts without credentials are reported as skipped, never an error.
    """
    accounts, skipped = settings.usable_accounts()
    report = SizingReport()
    for account_id, reason in skipped.items():
        report.accounts[account_id] = AccountOutcome(account_id, "skipped", reason=reason)
    if not accounts:
        return report
    names = list(universe)
    try:
        filters = parse_exchange_info(client_factory(settings).futures_exchange_info())
    except Exception as exc:
        log.warning("sizing: cannot read the exchange's symbol filters: %s: %s", type(exc).__name__, exc)
        reason = f"exchange filters unavailable: {type(exc).__name__}: {exc}"
        for account in accounts:
            report.accounts[account.account_id] = AccountOutcome(account.account_id, "failed", reason=reason)
        raise SizingError(f"no account could be sized: {reason}", report) from None
    for account in accounts:
        try:
            targets = _size_account(settings, paths, window_ms, alpha, prices, names, filters, account, client_factory)
        except Exception as exc:
            log.warning("sizing failed for account %s: %s: %s", account.account_id, type(exc).__name__, exc)
            reason = f"{type(exc).__name__}: {exc}"
            report.accounts[account.account_id] = AccountOutcome(account.account_id, "failed", reason=reason)
        else:
            report.accounts[account.account_id] = AccountOutcome(account.account_id, "written", targets)
    if not report.written:
        failed = "; ".join(f"{a}: {r}" for a, r in report.failed.items())
        raise SizingError(f"no account could be sized: {failed}", report)
    return report


def _size_account(
    settings: Settings,
    paths: DataPaths,
    window_ms: int,
    alpha: Mapping[str, float],
    prices: Mapping[str, Decimal],
    universe: list[str],
    filters: Mapping[str, SymbolRules],
    account: Account,
    client_factory: Callable[..., Any] = rest_client,
) -> AccountTargets:
    capital = account_capital(client_factory(settings, account).futures_account())
    positions = size_positions(alpha, capital, prices, filters, universe, settings.execution.sizing)
    return write_account_targets(paths, account.account_id, window_ms, capital, positions)
