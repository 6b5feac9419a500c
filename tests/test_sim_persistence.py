"""The trading engine's state survives a restart: rebuilt from its SQLite file it is the same exchange, funding is
never charged twice or skipped, a failure mid-change leaves no half order, and fresh=True starts afresh."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from test_sim_trading import HOUR, Harness

from simulator.trading.state import Position, to_json

D = Decimal


def snapshot(h: Harness) -> dict[str, list[str]]:
    """Every record the engine holds, serialised; untouched placeholder positions are not state."""
    ex = h.ex
    positions = [p for p in ex.positions.values() if p != Position(p.account_id, p.symbol, p.side)]
    records = [
        *ex.accounts.values(),
        *positions,
        *ex.orders.values(),
        *(t for ts in ex.trades.values() for t in ts),
        *(i for incomes in ex.income.values() for i in incomes),
        *ex.listen_keys.values(),
        *ex.ledger.countdowns.values(),
        ex.counters,
    ]
    out: dict[str, list[str]] = {}
    for r in records:
        out.setdefault(r.kind, []).append(to_json(r))
    return {k: sorted(v) for k, v in out.items()}


def restart(h: Harness, tmp: Path, fresh: bool = False) -> Harness:
    h.ex.close()
    mids = dict(h.market.mids)
    again = Harness(tmp, fresh=fresh, market=h.market)
    again.market.mids.update(mids)
    again.now = h.now
    return again


def trade_a_little(h: Harness) -> None:
    h.ex.change_leverage("alpha", {"symbol": "BTCUSDT", "leverage": "5"}, h.tick())
    h.ex.change_margin_type("alpha", {"symbol": "ETHUSDT", "marginType": "ISOLATED"}, h.tick())
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.5")
    h.order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="2")
    h.limit("SELL", "0.2", "30500", newClientOrderId="tp-1")
    h.limit("BUY", "0.1", "29500")
    h.ex.countdown_cancel_all("alpha", {"symbol": "ETHUSDT", "countdownTime": "600000"}, h.tick())
    h.fill_at("29400")  # the buy rests no more
    h.order("beta", symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.1")
    h.ex.new_listen_key("alpha", h.tick())


def test_restart_restores_everything(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    trade_a_little(h)
    before = snapshot(h)
    assert len(before["trade"]) >= 5 and len(before["order"]) == 5
    views = (
        h.ex.open_orders("alpha", {}, h.now),
        h.ex.income_history("alpha", {}, h.now),
        h.ex.valuation("alpha", h.now).available,
    )
    key = next(iter(h.ex.listen_keys))

    h = restart(h, tmp_path)
    assert snapshot(h) == before
    assert (
        h.ex.open_orders("alpha", {}, h.now),
        h.ex.income_history("alpha", {}, h.now),
        h.ex.valuation("alpha", h.now).available,
    ) == views
    assert h.ex.account_for_listen_key(key, h.now) == "alpha"
    # Ids continue where they stopped, and the restored resting order still works.
    last_id = max(h.ex.orders)
    assert h.limit("BUY", "0.01", "29000")["orderId"] == last_id + 1
    h.fill_at("30600")
    assert h.ex.get_order("alpha", {"symbol": "BTCUSDT", "origClientOrderId": "tp-1"}, h.tick())["status"] == "FILLED"


def test_fresh_starts_afresh(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    trade_a_little(h)
    h = restart(h, tmp_path, fresh=True)
    assert h.ex.orders == {} and h.ex.listen_keys == {}
    assert h.wallet() == D(100_000) and h.wallet("beta") == D(50_000)
    assert [i.income_type for i in h.ex.income["alpha"]] == ["TRANSFER"]


def test_funding_settled_exactly_once_across_restarts(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="2")
    base = h.wallet()
    first, second = h.now + HOUR, h.now + 2 * HOUR
    h.market.funding["BTCUSDT"] = [(first, D("0.0002"), D(30000)), (second, D("-0.0001"), D(30000))]

    h.ex.on_tick(first)  # settled before the restart
    assert h.wallet() == base - D(12)
    h = restart(h, tmp_path)
    h.ex.on_tick(first + 5)
    assert h.wallet() == base - D(12)  # not charged again
    h = restart(h, tmp_path)  # down while the second funding time passes
    h.ex.account_valuation("alpha", second + 1000)
    assert h.wallet() == base - D(12) + D(6)  # the missed one is paid once, on the next touch
    h.ex.on_tick(second + 2000)
    fees = [i.income for i in h.ex.income["alpha"] if i.income_type == "FUNDING_FEE"]
    assert fees == [D(-12), D(6)]


def test_failure_mid_change_leaves_no_half_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.1")
    before = snapshot(h)

    def crash(*args: object) -> dict:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(h.ex.ledger, "account_event", crash)  # fails after the fill touched position and wallet
    with pytest.raises(RuntimeError):
        h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.2")
    assert snapshot(h) == before  # memory rolled back to the last commit
    monkeypatch.undo()
    assert snapshot(restart(h, tmp_path)) == before  # and nothing half-written reached the disk


def test_a_countdown_survives_a_restart(tmp_path: Path) -> None:
    """The dead-man switch is stored: a simulator restarted while a client is gone still cancels its orders."""
    h = Harness(tmp_path)
    resting = h.limit("BUY", "0.1", "29000")
    h.ex.countdown_cancel_all("alpha", {"symbol": "BTCUSDT", "countdownTime": "60000"}, h.tick())
    again = restart(h, tmp_path)
    again.ex.on_tick(again.tick(30_000))
    assert [o["orderId"] for o in again.ex.open_orders("alpha", {"symbol": "BTCUSDT"}, again.now)] == [
        resting["orderId"]
    ]
    again.ex.on_tick(again.tick(30_000))
    assert again.ex.open_orders("alpha", {"symbol": "BTCUSDT"}, again.now) == []
    assert restart(again, tmp_path).ex.ledger.countdowns == {}  # fired once, then gone
