"""Helpers shared by the execution tests: fresh windows, target files, positions and convergence checks against
the simulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from lsq.clock import FakeClock
from lsq.config import Settings
from lsq.exchange import account_client
from lsq.exchange.rules import RulesProvider
from lsq.exchange.views import net_positions, parse_positions
from lsq.paths import DataPaths
from lsq.targets import TargetPosition, read_targets, write_targets
from lsq.timelabels import WINDOW_MS

D = Decimal

_windows = iter(range(1, 10_000))
_NOW = FakeClock().now_ms()


def fresh_window() -> int:
    """A distinct window per target file, later for each call, so no test shares client ids with another."""
    return _NOW - _NOW % WINDOW_MS - 5_000 * WINDOW_MS + next(_windows) * WINDOW_MS


def local(settings: Settings, tmp_path: Path, **execution: Any) -> Settings:
    data = settings.data.model_copy(update={"data_dir": tmp_path})
    return settings.model_copy(update={"data": data, "execution": settings.execution.model_copy(update=execution)})


def positions(settings: Settings, account_id: str) -> dict[str, Decimal]:
    client = account_client(settings, account_id)
    net: dict[str, Decimal] = {}
    for (symbol, _), amount in net_positions(parse_positions(client.futures_position_information())).items():
        net[symbol] = net.get(symbol, D(0)) + amount
    return {s: a for s, a in net.items() if a != 0}


def marks(settings: Settings, account_id: str) -> dict[str, Decimal]:
    client = account_client(settings, account_id)
    return {m["symbol"]: D(m["markPrice"]) for m in client.futures_mark_price()}


def flatten(settings: Settings, account_id: str) -> None:
    client = account_client(settings, account_id)
    rules = RulesProvider(client).rules()
    for o in client.futures_get_open_orders():
        client.futures_cancel_order(symbol=o["symbol"], orderId=o["orderId"])
    for row in parse_positions(client.futures_position_information()):
        if row.amount == 0:
            continue
        qty = rules[row.symbol].ceil_qty(abs(row.amount), market=True)
        extra = {"positionSide": row.position_side} if row.position_side != "BOTH" else {"reduceOnly": "true"}
        side = "SELL" if row.amount > 0 else "BUY"
        client.futures_create_order(symbol=row.symbol, side=side, type="MARKET", quantity=str(qty), **extra)
    assert positions(settings, account_id) == {}


def trade(settings: Settings, account_id: str, symbol: str, qty: str, **extra: str) -> None:
    q = D(qty)
    client = account_client(settings, account_id)
    client.futures_create_order(symbol=symbol, side="BUY" if q > 0 else "SELL", type="MARKET", quantity=str(abs(q)),
                                **extra)  # fmt: skip


def write_target(settings: Settings, account_id: str, notionals: dict[str, float], window: int | None = None) -> Path:
    prices = marks(settings, account_id)
    rules = RulesProvider(account_client(settings, account_id)).rules()
    rows = []
    for symbol, notional in sorted(notionals.items()):
        qty = rules[symbol].floor_qty(D(str(notional)) / prices[symbol], market=False)
        rows.append(TargetPosition(symbol, qty, qty * prices[symbol], prices[symbol]))
    return write_targets(DataPaths(settings.data_dir), account_id, window or fresh_window(), D("100000"), rows)


def assert_converged(settings: Settings, account_id: str, target: Path) -> None:
    """Every symbol within one market step of its target; everything else flat."""
    rules = RulesProvider(account_client(settings, account_id)).rules()
    wanted = {s: q for s, q in read_targets(target).quantities().items() if q != 0}
    held = positions(settings, account_id)
    for symbol in set(wanted) | set(held):
        step = rules[symbol].lot(market=True)[0]
        assert abs(wanted.get(symbol, D(0)) - held.get(symbol, D(0))) < step, (symbol, wanted, held)


def write_config(tmp_path: Path, sim: Any, **executor: Any) -> Path:
    """A configuration file for `lsq` subcommands: the simulator's endpoints and accounts, data under tmp_path."""
    import yaml

    accounts = [
        {"account_id": a.account_id, "api_key": a.api_key.get_secret_value(), "api_secret": secret.get_secret_value()}
        for a in sim.accounts
        if (secret := a.api_secret) is not None
    ]
    execution = {"mock": {"accounts": accounts}, "executor": executor}
    document = {"data": {"data_dir": str(tmp_path)}, "binance": {"mock": sim.settings.endpoints().model_dump()},
                "execution": execution}  # fmt: skip
    config = tmp_path / "lsq.yaml"
    config.write_text(yaml.safe_dump(document))
    return config


def order_ids(sim: Any, account_id: str) -> list[str]:
    return [o.client_order_id for o in list(sim.engine.orders.values()) if o.account_id == account_id]
