"""The order endpoints the executor needs, through python-binance against the real simulator on loopback: the book,
batch and test orders, leverage brackets, the dead-man switch, the order-request view and order faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.error
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import requests
import websockets
from binance import Client
from binance.exceptions import BinanceAPIException
from conftest import SimServer

from lsq.clock import FakeClock
from lsq.exchange import rest_client

D = Decimal


def client_of(sim: SimServer, account: int = 0) -> Client:
    return rest_client(sim.settings, sim.accounts[account])


def failure(fn: Callable[..., Any], **params: Any) -> BinanceAPIException:
    with pytest.raises(BinanceAPIException) as info:
        fn(**params)
    return info.value


def requests_of(sim: SimServer, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return sim.admin(f"orders?{query}")["requests"]


def far_bid(client: Client, symbol: str) -> str:
    """A limit price well under the market, inside PERCENT_PRICE: the order rests."""
    bid = D(client.futures_orderbook_ticker(symbol=symbol)["bidPrice"])
    return str((bid * D("0.95")).quantize(D("0.01")))


def test_depth_and_book_ticker(sim_server: SimServer) -> None:
    client = client_of(sim_server)
    depth = client.futures_order_book(symbol="BTCUSDT", limit=20)
    assert len(depth["bids"]) == len(depth["asks"]) == 20
    bids = [D(p) for p, _ in depth["bids"]]
    asks = [D(p) for p, _ in depth["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert client.response is not None and client.response.headers["X-MBX-USED-WEIGHT-1M"]
    top = client.futures_orderbook_ticker(symbol="ETHUSDT")
    assert D(top["bidPrice"]) < D(top["askPrice"]) and D(top["bidQty"]) > 0 and D(top["askQty"]) > 0
    every = client.futures_orderbook_ticker()
    assert {t["symbol"] for t in every} == set(sim_server.market.instruments)
    used = int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
    client.futures_order_book(symbol="BTCUSDT", limit=1000)
    after = int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
    assert after - used == 20 or after == 20  # weight 20 (or the minute's window just rolled over)
    assert failure(client.futures_order_book, symbol="BTCUSDT", limit=7).code == -1130
    assert failure(client.futures_order_book, symbol="NOPEUSDT").code == -1121


def test_batch_orders_answer_each_order_or_its_error(sim_server: SimServer) -> None:
    client = client_of(sim_server)
    price = far_bid(client, "BTCUSDT")
    rest = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": price}
    batch = [
        {**rest, "quantity": "0.002", "newClientOrderId": "batch-ok-1"},
        {**rest, "quantity": "0.0001", "newClientOrderId": "batch-bad-2"},  # finer than the step: -1111
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001", "newClientOrderId": "batch-mkt-3"},
    ]
    client.futures_create_order(**rest, quantity="0.001")
    assert client.response is not None
    count_10s = int(client.response.headers["X-MBX-ORDER-COUNT-10S"])
    answers = client.futures_place_batch_order(batchOrders=batch)
    assert client.response is not None
    assert int(client.response.headers["X-MBX-ORDER-COUNT-10S"]) in (count_10s + 5, 5)  # a batch counts 5
    assert [a.get("clientOrderId") for a in answers] == ["batch-ok-1", None, "batch-mkt-3"]
    assert answers[1]["code"] == -1111 and answers[1]["msg"]
    assert client.futures_get_order(symbol="BTCUSDT", origClientOrderId="batch-ok-1")["status"] == "NEW"
    seen = {e["clientOrderId"]: e["result"] for e in requests_of(sim_server, account="sim_alpha")}
    assert (seen["batch-ok-1"], seen["batch-bad-2"], seen["batch-mkt-3"]) == ("placed", "rejected", "placed")
    six = [{**rest, "quantity": "0.001"}] * 6
    assert failure(client.futures_place_batch_order, batchOrders=six).code == -1130
    client.futures_cancel_all_open_orders(symbol="BTCUSDT")
    assert client.futures_get_open_orders(symbol="BTCUSDT") == []


def test_price_match_and_post_only_through_the_api(sim_server: SimServer) -> None:
    client = client_of(sim_server)
    limit = {"symbol": "LTCUSDT", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1"}
    order = client.futures_create_order(**limit, side="BUY", priceMatch="QUEUE_5", newOrderRespType="RESULT")
    top = client.futures_orderbook_ticker(symbol="LTCUSDT")
    assert order["priceMatch"] == "QUEUE_5" and order["status"] == "NEW"
    # A buyer's queue is at or under the bid (0.1 % allows for the market moving between the two requests).
    assert D(order["price"]) <= D(top["bidPrice"]) * D("1.001") and D(order["price"]) % D("0.01") == 0
    post_only = {**limit, "timeInForce": "GTX"}
    assert failure(client.futures_create_order, **post_only, side="SELL", priceMatch="OPPONENT").code == -5022
    assert failure(client.futures_create_order, **limit, side="BUY", priceMatch="QUEUE", price="100").code == -1106
    client.futures_cancel_all_open_orders(symbol="LTCUSDT")


def test_test_order_validates_and_places_nothing(sim_server: SimServer) -> None:
    client = client_of(sim_server)
    mid = D(client.futures_orderbook_ticker(symbol="BCHUSDT")["bidPrice"])
    limit = {"symbol": "BCHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    low = str((mid * D("0.9")).quantize(D("0.01")))
    # LOT_SIZE allows 1001 BCH on a limit, MARKET_LOT_SIZE caps a market order at 1000.
    assert client.futures_create_test_order(**limit, quantity="1001", price=low, newClientOrderId="probe-1") == {}
    market = {"symbol": "BCHUSDT", "side": "BUY", "type": "MARKET"}
    assert failure(client.futures_create_test_order, **market, quantity="1001").code == -4005
    assert failure(client.futures_create_test_order, **limit, quantity="1", price=str(mid * 2)).code == -4016
    too_low = str((mid * D("0.5")).quantize(D("0.01")))
    assert failure(client.futures_create_test_order, **limit, quantity="1", price=too_low).code == -4024
    assert failure(client.futures_create_test_order, **market, quantity="0.001").code == -4164
    assert client.futures_get_open_orders(symbol="BCHUSDT") == []
    assert [e["result"] for e in requests_of(sim_server, clientOrderId="probe-1")] == ["tested"]


def test_leverage_brackets_match_the_leverage_limits(sim_server: SimServer) -> None:
    client = client_of(sim_server, 1)
    one = client.futures_leverage_bracket(symbol="ETHUSDT")
    assert one["symbol"] == "ETHUSDT"
    brackets = one["brackets"]
    assert [b["bracket"] for b in brackets] == list(range(1, len(brackets) + 1))
    assert brackets[0]["initialLeverage"] == 125 and brackets[0]["notionalFloor"] == 0
    assert all(b["notionalFloor"] == a["notionalCap"] for a, b in itertools.pairwise(brackets))
    maint = D(str(sim_server.market.instrument("ETHUSDT").maint_margin_percent)) / 100
    assert all(D(str(b["maintMarginRatio"])) == maint and b["cum"] == 0 for b in brackets)
    for bracket in brackets[:3]:
        answer = client.futures_change_leverage(symbol="ETHUSDT", leverage=bracket["initialLeverage"])
        assert D(answer["maxNotionalValue"]) == bracket["notionalCap"]
    client.futures_change_leverage(symbol="ETHUSDT", leverage=20)
    every = client.futures_leverage_bracket()
    assert {b["symbol"] for b in every} == set(sim_server.market.instruments)


def test_countdown_cancel_all_on_the_servers_clock(make_sim_server: Callable[..., SimServer]) -> None:
    """The dead-man switch fires on the server's clock: a FakeClock moved by the test, no waiting."""
    fake = FakeClock(now_ms=time.time_ns() // 1_000_000)
    sim = make_sim_server(clock_base=fake, symbols=2)
    client = client_of(sim)

    def advance(seconds: float) -> None:
        fake.advance(seconds)
        client.timestamp_offset = fake.now_ms() - time.time_ns() // 1_000_000  # the client keeps in sync

    order = client.futures_create_order(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price=far_bid(client, "BTCUSDT")
    )
    assert client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=30_000) == {
        "symbol": "BTCUSDT",
        "countdownTime": "30000",
    }
    advance(20)
    client.futures_countdown_cancel_all(symbol="BTCUSDT", countdownTime=30_000)  # heartbeat
    advance(20)
    assert [o["orderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT")] == [order["orderId"]]
    advance(11)
    assert client.futures_get_open_orders(symbol="BTCUSDT") == []
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])["status"] == "CANCELED"


def test_order_faults_and_the_request_view_count_what_was_placed(sim_server: SimServer) -> None:
    client = client_of(sim_server)
    market = {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}

    sim_server.admin("faults", {"order_faults": [{"kind": "unknown_after_place"}]})
    lost = failure(client.futures_create_order, **market, newClientOrderId="fault-503")
    assert (lost.status_code, lost.code) == (503, -1000)
    assert client.futures_get_order(symbol="ETHUSDT", origClientOrderId="fault-503")["status"] == "FILLED"
    client.futures_create_order(**market, newClientOrderId="fault-503")  # a blind resend doubles the order
    placed = requests_of(sim_server, clientOrderId="fault-503", result="placed")
    assert [(e["httpStatus"], e["fault"]) for e in placed] == [(503, "unknown_after_place"), (200, None)]

    # The server holds the answer 1 s, then drops the connection: the client sees no answer, whatever its timeout.
    sim_server.admin("faults", {"order_faults": [{"kind": "timeout_after_place", "hang_s": 1}]})
    client._requests_params = {"timeout": 30}
    with pytest.raises(requests.exceptions.ConnectionError):
        client.futures_create_order(**market, newClientOrderId="fault-timeout")
    client._requests_params = None
    assert client.futures_get_order(symbol="ETHUSDT", origClientOrderId="fault-timeout")["status"] == "FILLED"
    [hung] = requests_of(sim_server, clientOrderId="fault-timeout")
    assert (hung["result"], hung["httpStatus"], hung["fault"]) == ("placed", None, "timeout_after_place")

    sim_server.admin(
        "faults",
        {
            "order_faults": [
                {"kind": "margin_insufficient"},
                {"kind": "rate_limited", "retry_after_s": 7},
                {"kind": "banned", "retry_after_s": 120},
                {"kind": "margin_insufficient", "account": "sim_beta"},
            ]
        },
    )
    assert failure(client.futures_create_order, **market, newClientOrderId="fault-2019").code == -2019
    limited = failure(client.futures_create_order, **market, newClientOrderId="fault-429")
    assert (limited.status_code, limited.code, limited.response.headers["Retry-After"]) == (429, -1003, "7")
    banned = failure(client.futures_create_order, **market, newClientOrderId="fault-418")
    assert (banned.status_code, banned.response.headers["Retry-After"]) == (418, "120")
    assert client.futures_create_order(**market, newClientOrderId="fault-none")["status"] == "NEW"  # beta's is left
    assert sim_server.admin("faults")["order_faults"] == [
        {"kind": "margin_insufficient", "count": 1, "account": "sim_beta", "retry_after_s": 1, "hang_s": 30.0}
    ]
    for refused in ("fault-2019", "fault-429", "fault-418"):
        assert failure(client.futures_get_order, symbol="ETHUSDT", origClientOrderId=refused).code == -2013
        [entry] = requests_of(sim_server, clientOrderId=refused)
        assert entry["result"] == "fault" and entry["orderId"] is None
    with pytest.raises(Exception, match="400"):
        sim_server.admin("faults", {"order_faults": [{"kind": "explode"}]})
    with pytest.raises(Exception, match="400"):
        sim_server.admin("orders?colour=red")


def test_unknown_income_type_and_inverted_trade_range_are_refused(sim_server: SimServer) -> None:
    client = client_of(sim_server, 1)
    now = int(client.futures_time()["serverTime"])
    assert failure(client.futures_income_history, incomeType="BONUS").code == -1130
    inverted = failure(client.futures_account_trades, symbol="ETHUSDT", startTime=now, endTime=now - 1000)
    assert inverted.code == -1130 and "startTime" in inverted.message
    assert client.futures_income_history(incomeType="FUNDING_FEE") == []


def test_admin_transfer_books_income_changes_the_wallet_and_emits_account_update(sim_server: SimServer) -> None:
    client = client_of(sim_server, 1)
    key = client.futures_stream_get_listen_key()
    wallet = D(client.futures_account_balance()[0]["balance"])

    async def transfer_while_listening() -> list[dict[str, Any]]:
        async with websockets.connect(f"{sim_server.ws_url}/private/ws?listenKey={key}") as ws:
            loop = asyncio.get_running_loop()
            for kind, amount in (("DEPOSIT", "1234.5"), ("WITHDRAW", "200")):
                body = {"account": "sim_beta", "type": kind, "amount": amount}
                await loop.run_in_executor(None, sim_server.admin, "transfer", body)
            events: list[dict[str, Any]] = []
            while len(events) < 2:
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if event.get("e") == "ACCOUNT_UPDATE":
                    events.append(event["a"])
            return events

    deposit, withdrawal = asyncio.run(transfer_while_listening())
    assert (deposit["m"], deposit["B"][0]["bc"], D(deposit["B"][0]["wb"])) == (
        "DEPOSIT",
        "1234.5",
        wallet + D("1234.5"),
    )
    assert (withdrawal["m"], withdrawal["B"][0]["bc"]) == ("WITHDRAW", "-200")
    assert D(client.futures_account_balance()[0]["balance"]) == wallet + D("1034.5")
    transfers = client.futures_income_history(incomeType="TRANSFER")
    assert [i["income"] for i in transfers[-2:]] == ["1234.5", "-200"]
    assert len({i["tranId"] for i in transfers}) == len(transfers)
    for bad, why in (
        ({"account": "sim_beta", "type": "WITHDRAW", "amount": "1e9"}, "withdrawable"),
        ({"account": "nobody", "type": "DEPOSIT", "amount": "1"}, "unknown account"),
        ({"account": "sim_beta", "type": "GIFT", "amount": "1"}, "DEPOSIT or WITHDRAW"),
        ({"account": "sim_beta", "type": "DEPOSIT", "amount": "-5"}, "positive"),
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            sim_server.admin("transfer", bad)
        assert info.value.code == 400 and why in info.value.read().decode()
    assert D(client.futures_account_balance()[0]["balance"]) == wallet + D("1034.5")
