"""The trading endpoints through python-binance, unmodified, against the real simulator server on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from binance import Client
from binance.exceptions import BinanceAPIException

from lsq.config import Settings
from lsq.exchange import async_rest_client, rest_client, socket_manager
from simulator.clock import Clock
from simulator.market import Market
from simulator.trading import Exchange

D = Decimal


@dataclass
class Sim:
    settings: Settings
    market: Market
    engine: Exchange
    clock: Clock

    def client(self, account: int = 0) -> Client:
        return rest_client(self.settings, self.settings.execution.mock.accounts[account])

    def mid(self, symbol: str) -> Decimal:
        return self.market.mid_price(symbol, self.clock.now_ms())


@pytest.fixture
def sim(sim_server: Any) -> Sim:
    """The shared simulator of tests/conftest.py, seen through the parts these tests use."""
    return Sim(sim_server.settings, sim_server.market, sim_server.engine, sim_server.clock)


def code(fn, **params: object) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(BinanceAPIException) as info:
        fn(**params)
    return info.value.code


def test_account_views_start_from_the_configured_balance(sim: Sim) -> None:
    client = sim.client(1)  # sim_beta: untouched by the other tests
    account = client.futures_account()
    assert account["totalWalletBalance"] == "50000" and account["availableBalance"] == "50000"
    assert {p["symbol"] for p in account["positions"]} == set(sim.market.instruments)
    assert all(p["positionAmt"] == "0" and p["leverage"] == "20" for p in account["positions"])
    balance = client.futures_account_balance()
    assert balance[0]["asset"] == "USDT" and balance[0]["balance"] == "50000"
    assert client.futures_position_information() == []  # v3: only what is held
    assert client.futures_commission_rate(symbol="BTCUSDT")["takerCommissionRate"] == "0.0004"
    transfer = client.futures_income_history(incomeType="TRANSFER")
    assert [(i["income"], i["asset"]) for i in transfer] == [("50000", "USDT")]


def test_contract_settings(sim: Sim) -> None:
    client = sim.client()
    assert client.futures_change_leverage(symbol="ETHUSDT", leverage=5) == {
        "leverage": 5,
        "maxNotionalValue": "100000000",
        "symbol": "ETHUSDT",
    }
    assert code(client.futures_change_leverage, symbol="ETHUSDT", leverage=200) == -4028
    assert client.futures_change_margin_type(symbol="ETHUSDT", marginType="ISOLATED") == {
        "code": 200,
        "msg": "success",
    }
    assert code(client.futures_change_margin_type, symbol="ETHUSDT", marginType="ISOLATED") == -4046
    assert client.futures_get_position_mode() == {"dualSidePosition": False}
    assert code(client.futures_change_position_mode, dualSidePosition="false") == -4059
    client.futures_change_position_mode(dualSidePosition="true")
    assert client.futures_get_position_mode() == {"dualSidePosition": True}
    assert code(client.futures_create_order, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.1") == -4061
    client.futures_change_position_mode(dualSidePosition="false")
    assert client.futures_position_information(symbol="ETHUSDT") == []  # v3: nothing held, nothing listed
    client.futures_change_margin_type(symbol="ETHUSDT", marginType="CROSSED")


def test_order_lifecycle_positions_trades_income(sim: Sim) -> None:
    client = sim.client()
    ack = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.05")
    assert ack["status"] == "NEW" and ack["clientOrderId"].startswith("x-")  # ACK is Binance's default
    done = client.futures_get_order(symbol="BTCUSDT", orderId=ack["orderId"])
    assert done["status"] == "FILLED" and done["executedQty"] == "0.05"
    position = client.futures_position_information(symbol="BTCUSDT")
    assert len(position) == 1 and position[0]["positionAmt"] == "0.05"
    v2 = {p["symbol"]: p for p in client.futures_position_information(version=2)}
    assert set(v2) == set(sim.market.instruments) and v2["BTCUSDT"]["positionAmt"] == "0.05"
    assert v2["BTCUSDT"]["marginType"] == "cross" and D(v2["BTCUSDT"]["liquidationPrice"]) < D(done["avgPrice"])
    v3 = client.futures_account(version=3)
    assert [(p["symbol"], p["positionAmt"]) for p in v3["positions"]] == [("BTCUSDT", "0.05")]
    margin = D(position[0]["initialMargin"])  # at the mark, which moves between two requests
    assert abs(D(v3["totalPositionInitialMargin"]) - margin) < margin * D("0.001")
    assert client.futures_account_balance(version=2)[0]["balance"] == v3["totalWalletBalance"]
    assert D(position[0]["entryPrice"]) == D(done["avgPrice"])
    trades = client.futures_account_trades(symbol="BTCUSDT")
    assert sum(D(t["qty"]) for t in trades) == D("0.05") and all(not t["maker"] for t in trades)
    fees = client.futures_income_history(symbol="BTCUSDT", incomeType="COMMISSION")
    assert sum(D(f["income"]) for f in fees) == -sum(D(t["commission"]) for t in trades)

    far = (sim.mid("BTCUSDT") * D("0.9")).quantize(D("0.01"))
    rest = client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price=str(far)
    )
    assert [o["orderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT")] == [rest["orderId"]]
    cancelled = client.futures_cancel_order(symbol="BTCUSDT", orderId=rest["orderId"])
    assert cancelled["status"] == "CANCELED"
    assert client.futures_get_open_orders() == []
    assert code(client.futures_get_order, symbol="BTCUSDT", orderId=1) == -2013
    statuses = [o["status"] for o in client.futures_get_all_orders(symbol="BTCUSDT")]
    assert statuses == ["FILLED", "CANCELED"]

    closed = client.futures_create_order(
        symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.05", reduceOnly="true", newOrderRespType="RESULT"
    )
    assert closed["status"] == "FILLED"
    assert client.futures_position_information(symbol="BTCUSDT") == []
    pnl = client.futures_income_history(symbol="BTCUSDT", incomeType="REALIZED_PNL")
    assert len(pnl) >= 1 and all(p["tradeId"] for p in pnl)


def test_order_errors_carry_binance_codes(sim: Sim) -> None:
    client = sim.client()
    mid = sim.mid("BTCUSDT")
    limit = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    assert code(client.futures_create_order, **limit, quantity="0.01", price=f"{mid:.3f}1") == -1111
    assert code(client.futures_create_order, **limit, quantity="0.0001", price=str(mid)) == -1111
    eth = {**limit, "symbol": "ETHUSDT", "price": str((sim.mid("ETHUSDT") * D("0.99")).quantize(D("0.01")))}
    assert code(client.futures_create_order, **eth, quantity="0.001") == -4164  # ~2 USDT < MIN_NOTIONAL 5
    assert code(client.futures_create_order, **limit, quantity="0.01", price=str(mid * 2)) == -4016
    assert code(client.futures_create_order, **limit, quantity="100", price=str(mid - 100)) == -2019
    too_far = {**limit, "timeInForce": "GTX"}
    assert code(client.futures_create_order, **too_far, quantity="0.01", price=str(mid + 500)) == -5022
    assert (
        code(client.futures_create_order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="1", reduceOnly="true")
        == -2022
    )
    assert code(client.futures_create_order, symbol="NOPEUSDT", side="SELL", type="MARKET", quantity="1") == -1121
    assert code(client.futures_cancel_order, symbol="BTCUSDT", orderId=123) == -2011  # Binance: unknown order sent
    assert code(client.futures_get_order, symbol="BTCUSDT", orderId=123) == -2013  # querying: does not exist


def test_listen_key_lifecycle(sim: Sim) -> None:
    client = sim.client()
    key = client.futures_stream_get_listen_key()
    assert client.futures_stream_get_listen_key() == key  # one live key per account, extended
    assert client.futures_stream_keepalive(listenKey=key) == {"listenKey": key}
    client.futures_stream_close(listenKey=key)
    assert code(client.futures_stream_keepalive, listenKey=key) == -1125
    assert sim.engine.account_for_listen_key(key, sim.clock.now_ms()) is None


def test_user_socket_receives_order_and_account_updates(sim: Sim) -> None:
    async def run() -> list[dict]:
        client = await async_rest_client(sim.settings, sim.settings.execution.mock.accounts[0])
        try:
            socket = socket_manager(client, sim.settings).futures_user_socket()
            socket.TIMEOUT = 0.5  # its read loop polls this often; leaving the socket waits for one poll
            async with socket as stream:
                await asyncio.sleep(0.2)
                order = await client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.2")
                events: list[dict] = []
                while not any(e.get("e") == "ACCOUNT_UPDATE" for e in events):
                    events.append(await asyncio.wait_for(stream.recv(), 60))
                assert all(e["o"]["i"] == order["orderId"] for e in events if e["e"] == "ORDER_TRADE_UPDATE")
                return events
        finally:
            await client.close_connection()

    events = asyncio.run(run())
    updates = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert updates[0]["x"] == "NEW" and updates[-1]["X"] == "FILLED" and updates[-1]["z"] == "0.2"
    account = next(e["a"] for e in events if e["e"] == "ACCOUNT_UPDATE")
    assert account["m"] == "ORDER" and account["B"][0]["a"] == "USDT"
    assert account["P"][0]["s"] == "ETHUSDT" and account["P"][0]["pa"] == "0.2"
