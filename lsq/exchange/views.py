"""Typed views of python-binance's account answers, parsed in one place: Decimal money and quantities, int ms.

Everything downstream (sizing, executors, monitoring) works on these, never on the raw dicts, so a renamed or
missing field fails here with a message naming it instead of deep inside a computation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lsq.exchange.rules import ZERO, to_decimal


def _d(raw: Mapping[str, Any], key: str, default: str | None = None) -> Decimal:
    if key not in raw:
        if default is None:
            raise ValueError(f"exchange answer lacks {key!r}")
        return Decimal(default)
    return to_decimal(raw[key], key)


@dataclass(frozen=True)
class AccountView:
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    available_balance: Decimal

    @property
    def equity(self) -> Decimal:
        """Wallet balance plus unrealised profit: the capital sizing and leverage limits refer to."""
        return self.wallet_balance + self.unrealized_pnl


@dataclass(frozen=True)
class Balance:
    asset: str
    balance: Decimal
    available_balance: Decimal


@dataclass(frozen=True)
class Position:
    symbol: str
    position_side: str  # BOTH | LONG | SHORT
    amount: Decimal  # signed; SHORT legs are negative
    entry_price: Decimal
    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True)
class OpenOrder:
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    position_side: str
    type: str
    status: str
    price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    reduce_only: bool
    update_time: int

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass(frozen=True)
class Fill:
    symbol: str
    trade_id: int
    order_id: int
    side: str
    position_side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    time: int


def parse_account(raw: Mapping[str, Any]) -> AccountView:
    return AccountView(
        _d(raw, "totalWalletBalance"), _d(raw, "totalUnrealizedProfit"), _d(raw, "availableBalance", "0")
    )


def parse_balances(raw: Sequence[Mapping[str, Any]]) -> list[Balance]:
    return [Balance(str(b["asset"]), _d(b, "balance"), _d(b, "availableBalance", "0")) for b in raw]


def parse_positions(raw: Sequence[Mapping[str, Any]]) -> list[Position]:
    """positionRisk rows (v2 or v3); rows of every side are kept, zero amounts included."""
    return [
        Position(
            symbol=str(p["symbol"]),
            position_side=str(p.get("positionSide", "BOTH")),
            amount=_d(p, "positionAmt"),
            entry_price=_d(p, "entryPrice", "0"),
            mark_price=_d(p, "markPrice", "0"),
            notional=_d(p, "notional", "0"),
            unrealized_pnl=_d(p, "unRealizedProfit", "0"),
        )
        for p in raw
    ]


def parse_order(o: Mapping[str, Any]) -> OpenOrder:
    return OpenOrder(
        symbol=str(o["symbol"]),
        order_id=int(o["orderId"]),
        client_order_id=str(o.get("clientOrderId", "")),
        side=str(o["side"]),
        position_side=str(o.get("positionSide", "BOTH")),
        type=str(o.get("type", "")),
        status=str(o["status"]),
        price=_d(o, "price", "0"),
        orig_qty=_d(o, "origQty", "0"),
        executed_qty=_d(o, "executedQty", "0"),
        avg_price=_d(o, "avgPrice", "0"),
        reduce_only=bool(o.get("reduceOnly", False)),
        update_time=int(o.get("updateTime", o.get("time", 0)) or 0),
    )


def parse_orders(raw: Sequence[Mapping[str, Any]]) -> list[OpenOrder]:
    return [parse_order(o) for o in raw]


def parse_fills(raw: Sequence[Mapping[str, Any]]) -> list[Fill]:
    return [
        Fill(
            symbol=str(t["symbol"]),
            trade_id=int(t["id"]),
            order_id=int(t["orderId"]),
            side=str(t["side"]),
            position_side=str(t.get("positionSide", "BOTH")),
            price=_d(t, "price"),
            qty=_d(t, "qty"),
            quote_qty=_d(t, "quoteQty", "0"),
            commission=_d(t, "commission", "0"),
            commission_asset=str(t.get("commissionAsset", "USDT")),
            realized_pnl=_d(t, "realizedPnl", "0"),
            maker=bool(t.get("maker", False)),
            time=int(t["time"]),
        )
        for t in raw
    ]


def net_positions(positions: Sequence[Position]) -> dict[tuple[str, str], Decimal]:
    """(symbol, positionSide) -> signed amount, non-zero only."""
    out: dict[tuple[str, str], Decimal] = {}
    for p in positions:
        if p.amount != ZERO:
            out[(p.symbol, p.position_side)] = out.get((p.symbol, p.position_side), ZERO) + p.amount
    return out
