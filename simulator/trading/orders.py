"""Placing, finding and cancelling orders, validated exactly as Binance does, and the countdown cancel-all switch."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from decimal import Decimal

from simulator.errors import BinanceError, bad_param, mandatory_missing, unknown_order
from simulator.trading import margin as m
from simulator.trading.book import book_side
from simulator.trading.events import order_trade_update
from simulator.trading.fills import finish, take
from simulator.trading.ledger import Change, Ledger
from simulator.trading.params import (
    CLIENT_ID,
    PRICE_MATCHES,
    choice,
    limit_param,
    parse_batch,
    parse_bool,
    parse_decimal,
    parse_int,
)
from simulator.trading.rules import Rules, check_filters
from simulator.trading.state import AccountState, Countdown, Order
from simulator.trading.valuation import margin_needed, value

CatchUp = Callable[[str | None, int], AccountState]


class OrderDesk:
    """The order endpoints of one ledger. `caught_up` settles what is due for an account before it trades."""

    def __init__(self, ledger: Ledger, caught_up: CatchUp) -> None:
        self.ledger = ledger
        self.caught_up = caught_up

    def place(self, account_id: str, params: Mapping[str, str], now: int, *, test: bool = False) -> dict:
        """POST /fapi/v1/order: validate exactly as Binance, then fill, rest or expire. With `test`
        (POST /fapi/v1/order/test) every check runs and nothing is placed."""
        account = self.ledger.account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        rules = self.ledger.rules(symbol)
        side = choice(params, "side", ("BUY", "SELL"), -1117, "side")
        order_type = choice(params, "type", ("MARKET", "LIMIT"), -1116, "orderType")
        qty = parse_decimal(params, "quantity")
        is_market = order_type == "MARKET"
        price_match = params.get("priceMatch") or "NONE"
        if price_match not in PRICE_MATCHES:
            raise bad_param("priceMatch", price_match)
        if is_market:
            if params.get("price"):
                raise BinanceError(-1106, "Parameter 'price' sent when not required.")
            if price_match != "NONE":
                raise BinanceError(-1106, "Parameter 'priceMatch' sent when not required.")
            tif = "GTC"
            price = m.ZERO
        else:
            tif = choice(params, "timeInForce", ("GTC", "IOC", "FOK", "GTX"), -1115, "timeInForce")
            if price_match != "NONE":
                if params.get("price"):
                    raise BinanceError(-1106, "Parameter 'price' sent when not required (priceMatch sets it).")
                price = m.ZERO
            else:
                price = parse_decimal(params, "price")
        position_side = params.get("positionSide") or "BOTH"
        if position_side not in ("BOTH", "LONG", "SHORT"):
            raise bad_param("positionSide", position_side)
        if (position_side == "BOTH") == account.dual_side:
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        reduce_only = parse_bool(params, "reduceOnly")
        if reduce_only is not None and account.dual_side:
            raise BinanceError(-1106, "Parameter 'reduceonly' sent when not required.")
        reduce_only = bool(reduce_only)
        client_id = params.get("newClientOrderId") or secrets.token_hex(11)
        if not CLIENT_ID.match(client_id):
            raise BinanceError(-4015, "Client order id length should not be more than 36 chars")
        if any(o.client_order_id == client_id for o in self.ledger.open_orders(account_id)):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        if order_type == "LIMIT" and len(self.ledger.open_orders(account_id, symbol)) >= rules.max_num_orders:
            raise BinanceError(-2025, "Reach max open order limit.")
        resp_type = params.get("newOrderRespType") or "ACK"
        if resp_type not in ("ACK", "RESULT"):
            raise bad_param("newOrderRespType", resp_type)

        if price_match == "NONE":
            check_filters(rules, qty, price, is_market)
        self.caught_up(account_id, now)
        with self.ledger.change() as change:
            mid = self.ledger.mid_price(symbol, now)
            mark = self.ledger.mark_price(symbol, now)
            spread = m.half_spread_ticks(symbol)
            if price_match != "NONE":
                price = self._matched_price(rules, side, price_match, mid, spread)
                check_filters(rules, qty, price, is_market)
            if is_market:
                best = m.best_quote(side, mid, rules.tick, spread)
                if (side == "BUY" and best > mark * rules.percent_up) or (
                    side == "SELL" and best < mark * rules.percent_down
                ):
                    raise BinanceError(
                        -4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit."
                    )
            else:
                if price > mark * rules.percent_up:
                    raise BinanceError(-4016, f"Limit price can't be higher than {m.fmt(mark * rules.percent_up)}.")
                if price < mark * rules.percent_down:
                    raise BinanceError(-4024, f"Limit price can't be lower than {m.fmt(mark * rules.percent_down)}.")
            reference = mid if is_market else price
            if qty * reference < rules.min_notional and not reduce_only:
                raise BinanceError(
                    -4164,
                    f"Order's notional must be no smaller than {m.fmt(rules.min_notional)} "
                    "(unless you choose reduce only).",
                )
            amount = self.ledger.position(account_id, symbol, position_side).amount
            closing = amount != 0 and (amount > 0) != (side == "BUY")
            if reduce_only and not closing:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            if account.dual_side and position_side != ("LONG" if side == "BUY" else "SHORT") and qty > abs(amount):
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            after = abs(amount + m.sign(side) * qty) if not reduce_only else abs(amount)
            if after * mark > m.max_notional(account.leverage_for(symbol)):
                raise BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
            # A LIMIT crosses when the book shows liquidity at its price (book.py): the same inversion that sizes
            # what it takes, so a post-only order is refused exactly when it would have taken something.
            crossing = is_market or m.quantity_within(side, mid, rules.tick, spread, price, rules.step) > 0
            if tif == "GTX" and crossing:
                raise BinanceError(
                    -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
                )
            needed = margin_needed(
                self.ledger, account, symbol, side, position_side, qty, reference, is_market, reduce_only, now
            )
            if needed > 0 and needed > value(self.ledger, account_id, now).available:
                raise BinanceError(-2019, "Margin is insufficient.")
            if test:
                return {}

            order = Order(
                self.ledger.next_id(change, "next_order_id"),
                account_id,
                symbol,
                client_id,
                side,
                position_side,
                order_type,
                tif,
                qty,
                price,
                reduce_only,
                now,
                update_time=now,
                price_match=price_match,
            )
            self.ledger.orders[order.order_id] = self.ledger.open[order.order_id] = order
            change.touch(order)
            ack = order_view(order)
            change.emit(account_id, order_trade_update(order, "NEW", now))
            if crossing:
                take(self.ledger, change, account, order, mid, spread, now)
        return ack if resp_type == "ACK" else order_view(order)

    def _matched_price(self, rules: Rules, side: str, price_match: str, mid: Decimal, spread: int) -> Decimal:
        """The price `priceMatch` picks from the book: OPPONENT[_N] the N-th level across, QUEUE[_N] on our side."""
        name, _, nth = price_match.partition("_")
        level = int(nth or 1)
        # A buyer's opponents are the asks, which a BUY taker meets; its queue is the bids, which a SELL taker meets.
        taker_side = side if name == "OPPONENT" else ("SELL" if side == "BUY" else "BUY")
        levels = book_side(taker_side, mid, rules.tick, spread, rules.step, level)
        if not levels:
            raise BinanceError(-5021, "Due to the order could not be filled immediately, the order is rejected.")
        return levels[-1][0]

    def batch(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        """POST /fapi/v1/batchOrders: each order placed as POST /fapi/v1/order would, answered in order with the
        order or its error; one bad order does not stop the others."""
        orders = parse_batch(params)
        answers: list[dict] = []
        for item in orders:
            try:
                answers.append(self.place(account_id, item, now))
            except BinanceError as exc:
                answers.append(exc.body())
        return answers

    def _find(self, account_id: str, params: Mapping[str, str]) -> Order:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        order_id = parse_int(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            found = self.ledger.orders.get(order_id)
            if found is None or found.account_id != account_id or found.symbol != symbol:
                raise unknown_order()
            return found
        matches = [
            o
            for o in self.ledger.orders.values()
            if o.account_id == account_id and o.symbol == symbol and o.client_order_id == client_id
        ]
        if not matches:
            raise unknown_order()
        return matches[-1]

    def get(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        self.caught_up(account_id, now)
        with self.ledger.lock:
            return order_view(self._find(account_id, params))

    def cancel(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        """DELETE /fapi/v1/order: an unknown order is -2011 here (Binance), while querying it is -2013."""
        self.caught_up(account_id, now)
        with self.ledger.change() as change:
            try:
                order = self._find(account_id, params)
            except BinanceError as exc:
                if exc.code == unknown_order().code:
                    raise BinanceError(-2011, "Unknown order sent.") from None
                raise
            if not order.is_open:
                raise BinanceError(-2011, "Unknown order sent.")
            finish(change, order, "CANCELED", now)
            return order_view(order)

    def cancel_all(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        self.caught_up(account_id, now)
        with self.ledger.change() as change:
            for order in self.ledger.open_orders(account_id, symbol):
                finish(change, order, "CANCELED", now)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def countdown(self, account_id: str, params: Mapping[str, str], now: int) -> dict:
        """POST /fapi/v1/countdownCancelAll: every open order of the symbol is cancelled once `countdownTime` ms
        pass without another call (a dead-man switch); 0 stops the countdown."""
        self.ledger.account(account_id)
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        countdown = parse_int(params, "countdownTime")
        if countdown is None:
            raise mandatory_missing("countdownTime")
        if countdown < 0:
            raise BinanceError(-1130, "Data sent for parameter 'countdownTime' is not valid: must be >= 0 ms.")
        self.caught_up(account_id, now)
        with self.ledger.change() as change:
            armed = self.ledger.countdowns.pop((account_id, symbol), None)
            if countdown:
                armed = self.ledger.countdowns[(account_id, symbol)] = Countdown(account_id, symbol, now + countdown)
                change.touch(armed)
            elif armed is not None:
                change.delete(armed)
        return {"symbol": symbol, "countdownTime": str(countdown)}

    def fire_countdowns(self, change: Change, account: AccountState, now: int) -> None:
        """Cancel the open orders of every symbol whose countdown ended; stored, so a restart keeps the switch."""
        countdowns = self.ledger.countdowns
        due = [k for k, c in countdowns.items() if k[0] == account.account_id and c.deadline_ms <= now]
        for key in sorted(due):
            change.delete(countdowns.pop(key))
            for order in self.ledger.open_orders(account.account_id, key[1]):
                finish(change, order, "CANCELED", now)

    def open_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        symbol = params.get("symbol") or None
        if symbol:
            self.ledger.rules(symbol)
        self.caught_up(account_id, now)
        with self.ledger.lock:
            return [order_view(o) for o in self.ledger.open_orders(account_id, symbol)]

    def all_orders(self, account_id: str, params: Mapping[str, str], now: int) -> list[dict]:
        symbol = params.get("symbol") or ""
        if not symbol:
            raise mandatory_missing("symbol")
        self.ledger.rules(symbol)
        from_id = parse_int(params, "orderId")
        start, end = parse_int(params, "startTime"), parse_int(params, "endTime")
        limit = limit_param(params, 500, 1000)
        self.caught_up(account_id, now)
        with self.ledger.lock:
            chosen = [
                o
                for o in self.ledger.orders.values()
                if o.account_id == account_id
                and o.symbol == symbol
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start)
                and (end is None or o.time <= end)
            ]
            chosen = chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]
            return [order_view(o) for o in chosen]


def order_view(order: Order) -> dict:
    return {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": m.fmt(order.price),
        "avgPrice": m.fmt(order.avg_price.quantize(m.ENTRY_PLACES)),
        "origQty": m.fmt(order.orig_qty),
        "executedQty": m.fmt(order.executed_qty),
        "cumQty": m.fmt(order.executed_qty),
        "cumQuote": m.fmt(order.cum_quote),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": order.position_side,
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.type,
        "priceMatch": order.price_match,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "time": order.time,
        "updateTime": order.update_time,
    }
