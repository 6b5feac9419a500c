"""The trading engine's arithmetic, driven without a server on a scripted market (real instrument filters).

Resting LIMIT orders fill as maker exactly at their price once the scripted mid reaches them, which makes every
expected figure below computable by hand; taker fills are checked against the spread/impact rules instead.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from lsq.config import Account
from simulator.clock import Clock
from simulator.errors import BinanceError
from simulator.instruments import Instrument, instruments_by_symbol
from simulator.trading import Exchange
from simulator.trading import margin as m
from simulator.trading.endpoints import position_risk_body

D = Decimal
HOUR = 3_600_000


class ScriptedMarket:
    """The market interface the engine uses, with prices and funding events set by the test."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.instruments = {i.symbol: i for i in instruments}
        self.mids: dict[str, Decimal] = {i.symbol: i.ref_price for i in instruments}
        self.marks: dict[str, Decimal] = {}
        self.funding: dict[str, list[tuple[int, Decimal, Decimal]]] = {}

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[symbol]

    def mid_price(self, symbol: str, now_ms: int) -> Decimal:
        return self.mids[symbol]

    def mark_price(self, symbol: str, now_ms: int) -> Decimal:
        return self.marks.get(symbol, self.mids[symbol])

    def funding_times(self, symbol: str, start_ms: int, end_ms: int) -> list[int]:
        return [t for t, _, _ in self.funding.get(symbol, []) if start_ms <= t < end_ms]

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int, limit: int, *, now_ms: int) -> list[dict]:
        rows = [
            {"symbol": symbol, "fundingRate": str(r), "fundingTime": t, "markPrice": str(p)}
            for t, r, p in self.funding.get(symbol, [])
            if start_ms <= t <= min(end_ms, now_ms)
        ]
        return rows[:limit]


class Harness:
    def __init__(self, tmp: Path, fresh: bool = False, market: ScriptedMarket | None = None) -> None:
        base = instruments_by_symbol(["BTCUSDT", "ETHUSDT", "ADAUSDT", "MKRUSDT"])
        coarse = dataclasses.replace(
            base[0], symbol="COARSEUSDT", step_size=D("0.01"), min_qty=D("0.01"), max_num_orders=2
        )
        self.market = market or ScriptedMarket([*base, coarse])
        self.market.mids["BTCUSDT"] = D(30000)
        self.events: list[tuple[str, dict]] = []
        self.clock = Clock()
        accounts = [
            Account(
                account_id="alpha",
                api_key=SecretStr("alphaKey123"),
                api_secret=SecretStr("alphaSecret"),
                starting_balance_usdt=100_000,
            ),
            Account(account_id="beta", starting_balance_usdt=50_000),
        ]
        self.ex = Exchange(self.market, self.clock, tmp, accounts, lambda a, e: self.events.append((a, e)), fresh)
        self.t0 = self.clock.now_ms()  # the accounts opened at or before t0
        self.now = self.t0 + 1

    def tick(self, ms: int = 1) -> int:
        self.now += ms
        return self.now

    def order(self, account: str = "alpha", **params: object) -> dict:
        return self.ex.place_order(account, {k: str(v) for k, v in params.items()}, self.tick())

    def limit(self, side: str, qty: str, price: str, account: str = "alpha", **extra: object) -> dict:
        params: dict[str, object] = {"timeInForce": "GTC", **extra}
        return self.order(account, symbol="BTCUSDT", side=side, type="LIMIT", quantity=qty, price=price, **params)

    def fill_at(self, mid: str) -> None:
        """Move the market to `mid` and let the engine notice."""
        self.market.mids["BTCUSDT"] = D(mid)
        self.ex.on_tick(self.tick())

    def position(self, account: str = "alpha", symbol: str = "BTCUSDT", side: str = "BOTH") -> tuple[D, D]:
        p = self.ex.positions.get((account, symbol, side))
        return (p.amount, p.entry_price) if p else (D(0), D(0))

    def wallet(self, account: str = "alpha") -> D:
        return self.ex.accounts[account].wallet

    def income(self, kind: str, account: str = "alpha") -> D:
        return sum((i.income for i in self.ex.income[account] if i.income_type == kind), D(0))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def code_of(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(BinanceError) as info:
        fn(*args, **kwargs)
    return info.value.code


def test_open_add_reduce_flip_close_arithmetic(h: Harness) -> None:
    assert h.wallet() == D(100_000) and h.income("TRANSFER") == D(100_000)

    first = h.limit("BUY", "1", "29990")
    assert first["status"] == "NEW"  # below the ask: rests
    h.fill_at("29980")
    assert h.position() == (D(1), D(29990))
    assert h.wallet() == D("100000") - D("5.998")  # maker 0.02 % of 29990

    h.limit("BUY", "1", "29900")
    h.fill_at("29900")
    assert h.position() == (D(2), D(29945))  # weighted entry
    (risk,) = position_risk_body(h.ex, "alpha", "BTCUSDT", h.tick(), 3)
    assert risk["positionAmt"] == "2" and risk["entryPrice"] == "29945" and risk["markPrice"] == "29900"
    assert risk["unRealizedProfit"] == "-90" and risk["initialMargin"] == "2990"  # 2 x 29900 / 20
    assert D(risk["breakEvenPrice"]) == (D(29945) * D("1.0004") / D("0.9996")).quantize(D("1e-10"))
    h.limit("SELL", "0.5", "30100")
    h.fill_at("30100")
    assert h.position() == (D("1.5"), D(29945))  # partial close keeps the entry
    assert h.wallet() == D("100000") - D("5.998") - D("5.98") + D("77.5") - D("3.01")

    h.limit("SELL", "3", "30200")
    h.fill_at("30200")
    assert h.position() == (D("-1.5"), D(30200))  # flipped: the remainder opens at the fill price
    v = h.ex.valuation("alpha", h.tick())
    assert v.total_upnl == 0
    h.market.marks["BTCUSDT"] = D(30000)
    v = h.ex.valuation("alpha", h.tick())
    assert v.total_upnl == D(300)  # short 1.5 from 30200 marked at 30000
    assert v.positions[0].initial_margin == D("1.5") * 30000 / 20

    h.limit("BUY", "1.5", "30000")
    h.fill_at("30000")
    assert h.position() == (D(0), D(0))
    assert h.income("REALIZED_PNL") == D("77.5") + D("382.5") + D("300")
    assert h.income("COMMISSION") == -(D("5.998") + D("5.98") + D("3.01") + D("18.12") + D("9"))
    assert h.wallet() == D("100717.892")
    assert h.wallet() == sum((i.income for i in h.ex.income["alpha"]), D(0))
    trades = h.ex.user_trades("alpha", {"symbol": "BTCUSDT"}, h.tick())
    assert [t["realizedPnl"] for t in trades] == ["0", "0", "77.5", "382.5", "300"]
    assert all(t["maker"] for t in trades)


def test_market_order_fills_at_spread_plus_impact_on_tick_grid(h: Harness) -> None:
    small = h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.003", newOrderRespType="RESULT")
    assert small["status"] == "FILLED" and small["executedQty"] == "0.003"
    fills = h.ex.user_trades("alpha", {"symbol": "BTCUSDT", "orderId": str(small["orderId"])}, h.tick())
    assert len(fills) == 3  # walks a few levels
    ask = D(30000) + m.half_spread_ticks("BTCUSDT") * D("0.01")
    prices = [D(f["price"]) for f in fills]
    assert all(p >= ask and p % D("0.01") == 0 for p in prices)
    assert prices == sorted(prices)
    assert all(D(f["commission"]) == m.money(D(f["quoteQty"]) * D("0.0004")) for f in fills)
    big = h.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="30", newOrderRespType="RESULT")
    bid = D(30000) - m.half_spread_ticks("BTCUSDT") * D("0.01")
    assert D(big["avgPrice"]) < bid - D(30000) * D("0.0005")  # 900k notional moves the price well beyond the spread
    assert h.position()[0] == D("-29.997")


def test_limit_time_in_force(h: Harness) -> None:
    ask = D(30000) + m.half_spread_ticks("BTCUSDT") * D("0.01")
    crossing = h.limit("BUY", "0.01", str(ask + 5), newOrderRespType="RESULT")
    assert crossing["status"] == "FILLED" and D(crossing["avgPrice"]) <= ask + 5
    assert h.ex.user_trades("alpha", {"symbol": "BTCUSDT"}, h.tick())[-1]["maker"] is False
    best_ask = h.ex.book("BTCUSDT", 1, h.now)[1][0][0]  # the first ask level that holds quantity
    assert code_of(h.limit, "BUY", "0.01", str(best_ask), timeInForce="GTX") == -5022
    post_only = h.limit("BUY", "0.01", "29000", timeInForce="GTX", newOrderRespType="RESULT")
    assert post_only["status"] == "NEW"
    # A huge FOK at the ask cannot fill entirely within its price: nothing fills.
    fok = h.limit("SELL", "50", str(D(30000) - 20), timeInForce="FOK", newOrderRespType="RESULT")
    assert fok["status"] == "EXPIRED" and fok["executedQty"] == "0"
    ioc = h.limit("SELL", "50", str(D(30000) - 20), timeInForce="IOC", newOrderRespType="RESULT")
    assert ioc["status"] == "EXPIRED" and D(0) < D(ioc["executedQty"]) < D(50)
    resting = h.limit("SELL", "1", "31000")
    cancelled = h.ex.cancel_order("alpha", {"symbol": "BTCUSDT", "orderId": str(resting["orderId"])}, h.tick())
    assert cancelled["status"] == "CANCELED"
    assert code_of(h.ex.cancel_order, "alpha", {"symbol": "BTCUSDT", "orderId": str(resting["orderId"])}, h.tick()) == (
        -2011
    )
    assert code_of(h.ex.get_order, "alpha", {"symbol": "BTCUSDT", "orderId": "42"}, h.tick()) == -2013


def test_margin_check_reserves_open_orders(h: Harness) -> None:
    h.ex.change_leverage("alpha", {"symbol": "BTCUSDT", "leverage": "2"}, h.tick())
    h.limit("BUY", "6", "29000")  # 174 000 notional / 2 = 87 000 of 100 000 reserved
    v = h.ex.valuation("alpha", h.tick())
    assert v.order_margin == D(87_000) and v.available == D(13_000)
    assert code_of(h.limit, "BUY", "1", "29000") == -2019  # needs 14 500
    h.limit("BUY", "0.8", "29000")  # 11 600 fits
    h.limit("SELL", "1", "31000")  # the other side: the larger side counts, nothing more reserved
    assert h.ex.valuation("alpha", h.tick()).order_margin == D("6.8") * 29000 / 2
    assert code_of(h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1") == -2019  # 15 000 at mid


def test_reduce_only_and_position_side_rules(h: Harness) -> None:
    assert code_of(h.order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="1", reduceOnly="true") == -2022
    assert code_of(h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1", positionSide="LONG") == -4061
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1")
    assert code_of(h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1", reduceOnly="true") == -2022
    # A reduce-only order bigger than the position closes it and no more.
    closed = h.order(
        symbol="BTCUSDT", side="SELL", type="MARKET", quantity="3", reduceOnly="true", newOrderRespType="RESULT"
    )
    assert closed["executedQty"] == "1" and closed["status"] == "EXPIRED"
    assert h.position()[0] == 0
    # Hedge mode: LONG/SHORT required, reduceOnly not accepted, closing more than held rejected.
    assert code_of(h.ex.change_position_mode, "alpha", {"dualSidePosition": "false"}, h.tick()) == -4059
    h.limit("BUY", "1", "29000")
    assert code_of(h.ex.change_position_mode, "alpha", {"dualSidePosition": "true"}, h.tick()) == -4067
    h.ex.cancel_all("alpha", {"symbol": "BTCUSDT"}, h.tick())
    h.order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1")
    assert code_of(h.ex.change_position_mode, "alpha", {"dualSidePosition": "true"}, h.tick()) == -4068
    h.order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="1", reduceOnly="true")
    h.ex.change_position_mode("alpha", {"dualSidePosition": "true"}, h.tick())
    assert code_of(h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1") == -4061
    assert (
        code_of(
            h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1", positionSide="LONG", reduceOnly="true"
        )
        == -1106
    )
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1", positionSide="LONG")
    h.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="2", positionSide="SHORT")
    assert h.position(side="LONG")[0] == 1 and h.position(side="SHORT")[0] == -2
    assert code_of(h.order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="2", positionSide="LONG") == -2022


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT"}, -1121),
        ({"quantity": "0"}, -4003),
        ({"quantity": "-1"}, -4003),
        ({"quantity": "0.0001"}, -1111),  # BTC quantity precision is 3
        ({"price": "30000.001"}, -1111),  # price precision 2
        ({"symbol": "MKRUSDT", "price": "2750.05"}, -4014),  # MKR tick 0.10 with 2 decimals allowed
        ({"symbol": "ADAUSDT", "price": "0.95705", "quantity": "10"}, -4014),
        ({"symbol": "COARSEUSDT", "quantity": "0.015"}, -4023),
        ({"quantity": "1001"}, -4005),
        ({"symbol": "ETHUSDT", "quantity": "0.001", "price": "2192.30"}, -4164),
        ({"price": "35000"}, -4016),  # above mark x 1.15
        ({"side": "SELL", "price": "25000"}, -4024),  # below mark x 0.85
        ({"price": "100"}, -4013),  # under min price
        ({"side": "HOLD"}, -1117),
        ({"type": "STOPPY"}, -1116),
        ({"timeInForce": "DAY"}, -1115),
        ({"newClientOrderId": "x" * 37}, -4015),
        ({"quantity": "abc"}, -1100),
        ({"price": ""}, -1102),
    ],
)
def test_filter_errors(h: Harness, params: dict[str, str], code: int) -> None:
    h.market.mids["ETHUSDT"] = D("2192.30")
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}
    base["price"] = "29000"
    base.update(params)
    assert code_of(h.order, **base) == code
    assert h.ex.orders == {}


def test_market_lot_size_and_duplicate_client_id(h: Harness) -> None:
    assert code_of(h.order, symbol="MKRUSDT", side="BUY", type="MARKET", quantity="300") == -4005  # market max 250
    h.limit("BUY", "0.01", "29000", newClientOrderId="mine-1")
    assert code_of(h.limit, "BUY", "0.01", "29000", newClientOrderId="mine-1") == -4116
    got = h.ex.get_order("alpha", {"symbol": "BTCUSDT", "origClientOrderId": "mine-1"}, h.tick())
    assert got["clientOrderId"] == "mine-1" and got["status"] == "NEW"


def test_contract_setting_errors(h: Harness) -> None:
    assert code_of(h.ex.change_leverage, "alpha", {"symbol": "BTCUSDT", "leverage": "0"}, h.tick()) == -4028
    assert code_of(h.ex.change_leverage, "alpha", {"symbol": "BTCUSDT", "leverage": "126"}, h.tick()) == -4028
    body = h.ex.change_leverage("alpha", {"symbol": "BTCUSDT", "leverage": "10"}, h.tick())
    assert body == {"leverage": 10, "maxNotionalValue": "50000000", "symbol": "BTCUSDT"}
    assert code_of(h.ex.change_margin_type, "alpha", {"symbol": "BTCUSDT", "marginType": "CROSSED"}, h.tick()) == -4046
    h.limit("BUY", "0.01", "29000")
    assert code_of(h.ex.change_margin_type, "alpha", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}, h.tick()) == (
        -4047
    )
    h.ex.cancel_all("alpha", {"symbol": "BTCUSDT"}, h.tick())
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert code_of(h.ex.change_margin_type, "alpha", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}, h.tick()) == (
        -4048
    )


def test_isolated_margin_and_liquidation_price(h: Harness) -> None:
    h.ex.change_margin_type("alpha", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}, h.tick())
    h.ex.change_leverage("alpha", {"symbol": "BTCUSDT", "leverage": "10"}, h.tick())
    h.limit("BUY", "1", "29000")
    h.fill_at("29000")
    pos = h.ex.positions[("alpha", "BTCUSDT", "BOTH")]
    assert pos.isolated_wallet == D(2900)
    v = h.ex.valuation("alpha", h.tick())
    assert v.cross_wallet == h.wallet() - D(2900)
    # LP = (WB - Q*EP) / (Q*MMR - Q) with WB = 2900, EP = 29000, MMR = 2.5 %.
    assert v.positions[0].liquidation_price == ((D(2900) - D(29000)) / (D("0.025") - 1)).quantize(
        D("0.01"), "ROUND_DOWN"
    )
    h.limit("SELL", "0.5", "30000")
    h.fill_at("30000")
    assert pos.isolated_wallet == D(1450)  # half the margin released with half the position
    assert h.income("REALIZED_PNL") == D(500)


def test_funding_long_pays_short_receives_once(h: Harness) -> None:
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1")
    h.order("beta", symbol="BTCUSDT", side="SELL", type="MARKET", quantity="1")
    alpha_before, beta_before = h.wallet(), h.wallet("beta")
    when = h.now + HOUR
    h.market.funding["BTCUSDT"] = [(when, D("0.0001"), D(31000))]
    h.ex.on_tick(when - 1)
    assert h.wallet() == alpha_before
    h.ex.on_tick(when)
    assert h.wallet() == alpha_before - D("3.1")  # 1 x 31000 x 0.01 %
    assert h.wallet("beta") == beta_before + D("3.1")
    h.ex.on_tick(when + 10)
    h.ex.account_valuation("alpha", when + 20)
    assert h.income("FUNDING_FEE") == D("-3.1") and h.income("FUNDING_FEE", "beta") == D("3.1")
    reasons = [e["a"]["m"] for a, e in h.events if a == "alpha" and e["e"] == "ACCOUNT_UPDATE"]
    assert reasons.count("FUNDING_FEE") == 1


def test_user_data_events_follow_every_change(h: Harness) -> None:
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002", newClientOrderId="evt")
    kinds = [(e["e"], e.get("o", {}).get("x"), e.get("a", {}).get("m")) for a, e in h.events if a == "alpha"]
    assert kinds[0] == ("ORDER_TRADE_UPDATE", "NEW", None)
    assert kinds.count(("ORDER_TRADE_UPDATE", "TRADE", None)) == 2
    assert kinds[-1] == ("ACCOUNT_UPDATE", None, "ORDER")
    last_trade = [e for a, e in h.events if e["e"] == "ORDER_TRADE_UPDATE"][-1]["o"]
    assert last_trade["X"] == "FILLED" and last_trade["z"] == "0.002" and last_trade["c"] == "evt"
    update = h.events[-1][1]["a"]
    assert update["B"][0]["wb"] == m.fmt(h.wallet())
    assert update["P"][0]["pa"] == "0.002" and update["P"][0]["ps"] == "BOTH"


def test_max_open_orders_per_symbol(h: Harness) -> None:
    h.market.mids["COARSEUSDT"] = D(30000)
    params = {"symbol": "COARSEUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}
    h.order(**params, price="29000")
    h.order(**params, price="29001")
    assert code_of(h.order, **params, price="29002") == -2025


def test_hedge_closing_order_never_flips_the_side(h: Harness) -> None:
    h.ex.change_position_mode("alpha", {"dualSidePosition": "true"}, h.tick())
    assert code_of(h.limit, "SELL", "1", "30500", positionSide="LONG") == -2022  # nothing to close yet
    h.limit("BUY", "1", "29990", positionSide="LONG")
    h.fill_at("29980")
    assert h.position(side="LONG") == (D(1), D(29990))
    h.limit("SELL", "1", "30500", positionSide="LONG")  # take-profit resting above
    h.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.6", positionSide="LONG")
    h.fill_at("30600")  # the take-profit is bigger than what is left: it closes 0.4 and expires
    assert h.position(side="LONG")[0] == 0 and h.position(side="SHORT")[0] == 0
    tp = h.ex.open_orders("alpha", {}, h.tick())
    assert tp == []


def test_resting_order_fills_on_the_next_request_of_its_account(h: Harness) -> None:
    order = h.limit("BUY", "0.1", "29900")
    h.market.mids["BTCUSDT"] = D(29890)  # no tick: the account's own request notices
    got = h.ex.get_order("alpha", {"symbol": "BTCUSDT", "orderId": str(order["orderId"])}, h.tick())
    assert got["status"] == "FILLED" and got["avgPrice"] == "29900"
    assert h.position() == (D("0.1"), D(29900))


def test_income_filters_and_limits(h: Harness) -> None:
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    h.order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.1")
    h.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01")
    rows = h.ex.income_history("alpha", {}, h.tick())
    assert rows[0]["incomeType"] == "TRANSFER"
    assert [r["tranId"] for r in rows] == sorted(r["tranId"] for r in rows)
    btc_fees = h.ex.income_history("alpha", {"symbol": "BTCUSDT", "incomeType": "COMMISSION"}, h.tick())
    assert len(btc_fees) == len(h.ex.user_trades("alpha", {"symbol": "BTCUSDT"}, h.tick()))
    assert all(r["symbol"] == "BTCUSDT" and D(r["income"]) < 0 and r["tradeId"] for r in btc_fees)
    assert h.ex.income_history("alpha", {"limit": "2"}, h.tick()) == rows[-2:]  # no start: the latest
    start = str(rows[1]["time"])
    assert h.ex.income_history("alpha", {"startTime": start, "limit": "1"}, h.tick()) == [rows[1]]
    assert h.ex.income_history("alpha", {"endTime": str(h.t0)}, h.tick()) == rows[:1]
    assert code_of(h.ex.income_history, "alpha", {"limit": "1001"}, h.tick()) == -1130


def test_listen_keys_expire_after_an_hour_unless_kept_alive(h: Harness) -> None:
    start = h.tick()
    key = h.ex.new_listen_key("alpha", start)
    assert h.ex.new_listen_key("alpha", start + 10) == key  # one live key per account
    assert h.ex.account_for_listen_key(key, start + 59 * 60_000) == "alpha"
    h.ex.keepalive_listen_key("alpha", key, start + 59 * 60_000)
    assert h.ex.account_for_listen_key(key, start + 100 * 60_000) == "alpha"
    assert code_of(h.ex.keepalive_listen_key, "beta", key, start) == -1125  # another account's key
    h.ex.on_tick(start + 120 * 60_000)
    assert h.ex.account_for_listen_key(key, start + 120 * 60_000) is None
    assert ("alpha", {"e": "listenKeyExpired", "E": start + 120 * 60_000, "listenKey": key}) in h.events
    assert code_of(h.ex.keepalive_listen_key, "alpha", key, start + 121 * 60_000) == -1125
    assert h.ex.new_listen_key("alpha", start + 122 * 60_000) != key


def test_funding_from_the_real_market_model(tmp_path: Path) -> None:
    """The engine settles the simulator's own funding schedule and rates (half-open funding_times, now_ms)."""
    from simulator.instruments import select_instruments
    from simulator.market import Market

    market = Market(select_instruments(2), seed=5)
    clock = Clock()
    events: list[tuple[str, dict]] = []
    account = Account(account_id="gamma", starting_balance_usdt=10_000)
    ex = Exchange(market, clock, tmp_path, [account], lambda a, e: events.append((a, e)))
    now = clock.now_ms() + 1
    settle = market.funding_times("ETHUSDT", now + 1, now + 9 * HOUR)[0]
    ex.place_order("gamma", {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "1"}, now)
    before = ex.accounts["gamma"].wallet
    ex.on_tick(settle - 1)
    assert ex.accounts["gamma"].wallet == before
    ex.on_tick(settle)
    (row,) = market.funding_rates("ETHUSDT", settle, settle, 10, now_ms=settle)
    expected = m.money(D(1) * D(row["markPrice"]) * D(row["fundingRate"]))  # the short receives rate x notional
    assert expected != 0 and ex.accounts["gamma"].wallet - before == expected
    ex.on_tick(settle + 8 * HOUR - 1)
    assert [i.income for i in ex.income["gamma"] if i.income_type == "FUNDING_FEE"] == [expected]
    ex.close()


def test_market_orders_fill_at_what_the_book_shows(h: Harness) -> None:
    """Each fill of a market order is at the ask level where the book's cumulative depth reaches the quantity
    filled so far: a client reading /depth knows its worst price before it sends."""
    bids, asks = h.ex.book("BTCUSDT", 100, h.now)
    assert asks[0][0] > D(30000) > bids[0][0] and all(q > 0 for _, q in asks + bids)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks) and [p for p, _ in bids] == sorted(
        (p for p, _ in bids), reverse=True
    )
    depth = h.ex.depth({"symbol": "BTCUSDT", "limit": "100"}, h.now)
    assert depth["asks"][0] == [m.fmt(asks[0][0]), m.fmt(asks[0][1])] and len(depth["bids"]) == 100
    ticker = h.ex.book_ticker({"symbol": "BTCUSDT"}, h.now)
    assert (ticker["askPrice"], ticker["bidQty"]) == (m.fmt(asks[0][0]), m.fmt(bids[0][1]))

    def level_reaching(levels: list[tuple[D, D]], qty: D) -> D:
        total = D(0)
        for price, size in levels:
            total += size
            if total >= qty:
                return price
        raise AssertionError("the book is too shallow for the test")

    qty = sum((q for _, q in asks[:10]), D(0))  # ten levels deep
    order = h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=str(qty), newOrderRespType="RESULT")
    fills = h.ex.user_trades("alpha", {"symbol": "BTCUSDT", "orderId": str(order["orderId"])}, h.tick())
    cumulative = D(0)
    for fill in fills:
        cumulative += D(fill["qty"])
        assert D(fill["price"]) == level_reaching(asks, cumulative)
    assert D(fills[-1]["price"]) == asks[9][0]
    # A LIMIT takes exactly the depth shown up to its price.
    sell = h.limit("SELL", "50", str(bids[4][0]), timeInForce="IOC", newOrderRespType="RESULT")
    assert D(sell["executedQty"]) == sum((q for _, q in bids[:5]), D(0))
    assert code_of(h.ex.depth, {"symbol": "BTCUSDT", "limit": "7"}, h.now) == -1130


def test_price_match_takes_its_price_from_the_book(h: Harness) -> None:
    bids, asks = h.ex.book("BTCUSDT", 20, h.now)
    queue = h.limit("BUY", "0.01", "", priceMatch="QUEUE", newOrderRespType="RESULT")
    assert (queue["price"], queue["priceMatch"], queue["status"]) == (m.fmt(bids[0][0]), "QUEUE", "NEW")
    deep = h.limit("SELL", "0.01", "", priceMatch="QUEUE_10", newOrderRespType="RESULT")
    assert D(deep["price"]) == asks[9][0] and deep["status"] == "NEW"
    taker = h.limit("BUY", "0.001", "", priceMatch="OPPONENT_5", newOrderRespType="RESULT")
    assert D(taker["price"]) == asks[4][0] and taker["status"] == "FILLED"
    assert code_of(h.limit, "BUY", "0.01", "29000", priceMatch="QUEUE") == -1106  # price and priceMatch
    assert code_of(h.limit, "BUY", "0.01", "", priceMatch="BEST") == -1100
    assert code_of(h.order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", priceMatch="QUEUE") == -1106
    assert code_of(h.limit, "BUY", "0.01", "", priceMatch="OPPONENT", timeInForce="GTX") == -5022


def test_countdown_cancels_the_symbols_open_orders_unless_refreshed(h: Harness) -> None:
    first = h.limit("BUY", "0.01", "29000")
    other = h.order(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="1", price="1900")
    armed = h.ex.countdown_cancel_all("alpha", {"symbol": "BTCUSDT", "countdownTime": "10000"}, h.now)
    assert armed == {"symbol": "BTCUSDT", "countdownTime": "10000"}
    h.ex.on_tick(h.tick(6000))
    h.ex.countdown_cancel_all("alpha", {"symbol": "BTCUSDT", "countdownTime": "10000"}, h.now)  # heartbeat
    h.ex.on_tick(h.tick(6000))
    assert [o["orderId"] for o in h.ex.open_orders("alpha", {"symbol": "BTCUSDT"}, h.now)] == [first["orderId"]]
    h.ex.on_tick(h.tick(4000))
    assert h.ex.open_orders("alpha", {"symbol": "BTCUSDT"}, h.now) == []
    assert h.ex.get_order("alpha", {"symbol": "BTCUSDT", "orderId": str(first["orderId"])}, h.now)["status"] == (
        "CANCELED"
    )
    assert [o["orderId"] for o in h.ex.open_orders("alpha", {"symbol": "ETHUSDT"}, h.now)] == [other["orderId"]]
    h.ex.countdown_cancel_all("alpha", {"symbol": "ETHUSDT", "countdownTime": "1000"}, h.now)
    h.ex.countdown_cancel_all("alpha", {"symbol": "ETHUSDT", "countdownTime": "0"}, h.tick())  # disarmed
    h.ex.on_tick(h.tick(60_000))
    assert len(h.ex.open_orders("alpha", {"symbol": "ETHUSDT"}, h.now)) == 1
    assert code_of(h.ex.countdown_cancel_all, "alpha", {"symbol": "ETHUSDT", "countdownTime": "-1"}, h.now) == -1130
    assert code_of(h.ex.countdown_cancel_all, "alpha", {"symbol": "ETHUSDT"}, h.now) == -1102


def test_reduce_only_orders_are_exempt_from_min_notional(h: Harness) -> None:
    h.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert code_of(h.order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.0001") in (-1111, -4004)
    h.market.mids["BTCUSDT"] = D(3000)  # 0.001 BTC is now 3 USDT, under MIN_NOTIONAL 5
    h.market.marks["BTCUSDT"] = D(3000)
    assert code_of(h.order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.001") == -4164
    dust = h.order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.001", reduceOnly="true")
    assert dust["status"] == "NEW"  # ACK: accepted, then filled
    assert h.position()[0] == D("0.009")
