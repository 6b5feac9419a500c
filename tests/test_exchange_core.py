"""The core's exchange access against the real simulator: cached signed clients, typed views, symbol rules,
and the user data stream through /private/ws."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from lsq.exchange import account_client, resync_clock
from lsq.exchange.rules import RulesProvider, SymbolRules, parse_exchange_info
from lsq.exchange.user_stream import AccountUpdate, OrderUpdate, UserDataStream
from lsq.exchange.views import parse_account, parse_fills, parse_orders, parse_positions

D = Decimal


def test_grid_rounding_follows_the_order_type() -> None:
    rules = SymbolRules(
        "X", step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("5"), market_step_size=D("0.01"),
        market_min_qty=D("0.01"), market_max_qty=D("100"), tick_size=D("0.1"), percent_up=D("1.05"),
        percent_down=D("0.95"),
    )  # fmt: skip
    assert rules.floor_qty(D("1.2345"), market=False) == D("1.234")
    assert rules.floor_qty(D("1.2345"), market=True) == D("1.23")
    assert rules.floor_qty(D("-1.2345"), market=True) == D("-1.23")
    assert rules.ceil_qty(D("0.0042"), market=True) == D("0.01")  # a reduce-only close rounds up (trimmed)
    assert rules.floor_qty(D("0.0009"), market=False) == 0
    assert rules.clamp_limit_price(D("120"), D("100"), "BUY") == D("105.0")
    assert rules.clamp_limit_price(D("94.93"), D("100"), "SELL") == D("95.0")
    assert rules.clamp_limit_price(D("100.07"), D("100"), "BUY") == D("100.0")


def test_rules_and_views_from_the_simulator(sim_server: Any) -> None:
    settings = sim_server.settings
    account_id = sim_server.accounts[0].account_id
    client = account_client(settings, account_id)
    assert account_client(settings, account_id) is client  # one cached client per account
    assert isinstance(resync_clock(client), int)
    rules = RulesProvider(client).rules()
    info = client.futures_exchange_info()
    assert set(rules) == {s["symbol"] for s in info["symbols"]}
    btc = rules["BTCUSDT"]
    lot = next(f for f in info["symbols"] if f["symbol"] == "BTCUSDT")["filters"]
    market = next(f for f in lot if f["filterType"] == "MARKET_LOT_SIZE")
    assert btc.market_step_size == D(market["stepSize"]) and btc.percent_up is not None
    assert parse_exchange_info(info)["BTCUSDT"] == btc

    account = parse_account(client.futures_account())
    assert account.equity > 0
    price = D(client.futures_mark_price(symbol="BTCUSDT")["markPrice"])
    qty = btc.floor_qty(D(20) / price * 5, market=True)
    order = client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity=str(qty), newClientOrderId="core-view-test-1"
    )
    [pos] = [p for p in parse_positions(client.futures_position_information(symbol="BTCUSDT")) if p.amount]
    assert pos.amount >= qty and pos.mark_price > 0
    fills = parse_fills(client.futures_account_trades(symbol="BTCUSDT", orderId=order["orderId"]))
    assert sum(f.qty for f in fills) == qty and all(f.commission > 0 for f in fills)
    got = parse_orders([client.futures_get_order(symbol="BTCUSDT", origClientOrderId="core-view-test-1")])
    assert got[0].status == "FILLED" and got[0].executed_qty == qty
    client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=str(qty), reduceOnly="true")


def test_user_stream_yields_typed_order_and_account_events(sim_server: Any) -> None:
    settings = sim_server.settings
    account_id = sim_server.accounts[1].account_id
    client = account_client(settings, account_id)
    rules = RulesProvider(client).rules()["ETHUSDT"]
    price = D(client.futures_mark_price(symbol="ETHUSDT")["markPrice"])
    qty = rules.floor_qty(D(50) / price, market=True)

    async def collect() -> list[Any]:
        stream = UserDataStream(client, settings.endpoints().ws_url)
        got: list[Any] = []
        events = stream.events()

        async def order_when_connected() -> None:
            while stream.connections == 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(
                client.futures_create_order,
                symbol="ETHUSDT", side="SELL", type="MARKET", quantity=str(qty), newClientOrderId="core-stream-1",
            )  # fmt: skip

        sender = asyncio.create_task(order_when_connected())
        async for event in events:
            got.append(event)
            if any(isinstance(e, AccountUpdate) for e in got) and any(
                isinstance(e, OrderUpdate) and e.status == "FILLED" for e in got
            ):
                break
        await events.aclose()  # type: ignore[attr-defined]
        await sender
        return got

    events = asyncio.run(asyncio.wait_for(collect(), timeout=60))
    filled = [e for e in events if isinstance(e, OrderUpdate) and e.status == "FILLED"]
    assert filled[0].client_order_id == "core-stream-1" and filled[0].cum_qty == qty
    account = [e for e in events if isinstance(e, AccountUpdate)]
    assert any(p.symbol == "ETHUSDT" and p.amount == -qty for a in account for p in a.positions)
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=str(qty), reduceOnly="true")


def test_unknown_account_is_one_clear_message(sim_server: Any) -> None:
    with pytest.raises(ValueError, match="no account 'nobody'"):
        account_client(sim_server.settings, "nobody")


def test_user_stream_reconnects_after_a_drop_and_keeps_delivering(sim_server: Any) -> None:
    settings = sim_server.settings
    account_id = sim_server.accounts[0].account_id
    client = account_client(settings, account_id)
    rules = RulesProvider(client).rules()["XRPUSDT"]
    price = D(client.futures_mark_price(symbol="XRPUSDT")["markPrice"])
    qty = rules.floor_qty(D(30) / price, market=True)

    async def after_drop() -> tuple[int, OrderUpdate]:
        stream = UserDataStream(client, settings.endpoints().ws_url, reconnect_s=0.2)
        events = stream.events()

        async def drop_then_order() -> None:
            while stream.connections == 0:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(sim_server.admin, "faults", {"drop_now": True})
            while stream.connections < 2:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(
                client.futures_create_order,
                symbol="XRPUSDT", side="BUY", type="MARKET", quantity=str(qty), newClientOrderId="core-reconnect-1",
            )  # fmt: skip

        driver = asyncio.create_task(drop_then_order())
        async for event in events:
            if isinstance(event, OrderUpdate) and event.client_order_id == "core-reconnect-1":
                break
        await events.aclose()  # type: ignore[attr-defined]
        await driver
        return stream.connections, event

    connections, event = asyncio.run(asyncio.wait_for(after_drop(), timeout=60))
    assert connections >= 2 and event.symbol == "XRPUSDT"
    client.futures_create_order(symbol="XRPUSDT", side="SELL", type="MARKET", quantity=str(qty), reduceOnly="true")
