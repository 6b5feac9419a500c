"""Contract settings before trading: the account's position mode, and margin type and leverage of each symbol to
trade when they differ from `execution.contract_settings`. "No need to change" (-4046, -4059) is success; a symbol
whose setting fails is skipped (and reported), the others trade. The position mode actually in force is returned,
because a change is refused while positions or orders exist and the plan must follow what the exchange does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lsq.config import ContractSettings

NO_CHANGE = (-4046, -4059)


@dataclass
class ContractState:
    dual_side: bool
    skipped: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def apply_contract_settings(
    client: Any, wanted: ContractSettings, symbols: Iterable[str], account: Mapping[str, Any], *, dry_run: bool
) -> ContractState:
    """Bring the account to `wanted` (nothing is changed in a dry run: differences are only noted)."""
    from binance.exceptions import BinanceAPIException

    dual = bool(client.futures_get_position_mode()["dualSidePosition"])
    state = ContractState(dual)
    want_dual = wanted.position_mode == "dual_side"
    if dual != want_dual:
        if dry_run:
            state.notes.append(f"position mode would change to {wanted.position_mode}")
        else:
            try:
                client.futures_change_position_mode(dualSidePosition="true" if want_dual else "false")
                state.dual_side = want_dual
                state.changes.append(f"position mode -> {wanted.position_mode}")
            except BinanceAPIException as exc:
                if exc.code in NO_CHANGE:
                    state.dual_side = want_dual
                else:
                    state.notes.append(f"position mode stays {'dual_side' if dual else 'one_way'}: {exc.message}")
    held = {p["symbol"]: p for p in account.get("positions", [])}
    want_isolated = wanted.margin_type == "ISOLATED"
    for symbol in sorted(set(symbols)):
        row = held.get(symbol, {})
        try:
            if row and bool(row.get("isolated")) != want_isolated:
                if dry_run:
                    state.notes.append(f"{symbol}: margin type would change to {wanted.margin_type}")
                else:
                    _tolerant(client.futures_change_margin_type, symbol=symbol, marginType=wanted.margin_type)
                    state.changes.append(f"{symbol}: margin {wanted.margin_type}")
            if row.get("leverage") is None or int(row["leverage"]) != wanted.leverage:
                if dry_run:
                    state.notes.append(f"{symbol}: leverage would change to {wanted.leverage}")
                else:
                    _tolerant(client.futures_change_leverage, symbol=symbol, leverage=wanted.leverage)
                    state.changes.append(f"{symbol}: leverage {wanted.leverage}")
        except BinanceAPIException as exc:
            state.skipped[symbol] = f"contract settings failed ({exc.code}: {exc.message})"
    return state


def _tolerant(call: Any, **params: Any) -> None:
    from binance.exceptions import BinanceAPIException

    try:
        call(**params)
    except BinanceAPIException as exc:
        if exc.code not in NO_CHANGE:
            raise
