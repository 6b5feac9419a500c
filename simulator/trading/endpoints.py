"""The signed trading REST endpoints, with Binance's paths, weights and response shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from simulator.errors import BinanceError
from simulator.routing import Endpoint, Request, Security
from simulator.trading import margin as m
from simulator.trading.book import depth_weight
from simulator.trading.engine import Exchange
from simulator.trading.state import AccountState
from simulator.trading.valuation import PositionView, Valuation

fmt = m.fmt


def _account_id(request: Request) -> str:
    if request.account_id is None:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return request.account_id


def _asset(v: Valuation, now: int) -> dict[str, Any]:
    margin_balance = v.wallet + v.total_upnl
    available = max(m.ZERO, v.available)
    return {
        "asset": "USDT",
        "walletBalance": fmt(m.money(v.wallet)),
        "unrealizedProfit": fmt(m.money(v.total_upnl)),
        "marginBalance": fmt(m.money(margin_balance)),
        "maintMargin": fmt(m.money(v.maint_margin)),
        "initialMargin": fmt(m.money(v.position_margin + v.order_margin)),
        "positionInitialMargin": fmt(m.money(v.position_margin)),
        "openOrderInitialMargin": fmt(m.money(v.order_margin)),
        "crossWalletBalance": fmt(m.money(v.cross_wallet)),
        "crossUnPnl": fmt(m.money(v.cross_upnl)),
        "availableBalance": fmt(m.money(available)),
        "maxWithdrawAmount": fmt(m.money(min(available, v.cross_wallet))),
        "marginAvailable": True,
        "updateTime": now,
    }


def _totals(v: Valuation) -> dict[str, str]:
    available = max(m.ZERO, v.available)
    return {
        "totalInitialMargin": fmt(m.money(v.position_margin + v.order_margin)),
        "totalMaintMargin": fmt(m.money(v.maint_margin)),
        "totalWalletBalance": fmt(m.money(v.wallet)),
        "totalUnrealizedProfit": fmt(m.money(v.total_upnl)),
        "totalMarginBalance": fmt(m.money(v.wallet + v.total_upnl)),
        "totalPositionInitialMargin": fmt(m.money(v.position_margin)),
        "totalOpenOrderInitialMargin": fmt(m.money(v.order_margin)),
        "totalCrossWalletBalance": fmt(m.money(v.cross_wallet)),
        "totalCrossUnPnl": fmt(m.money(v.cross_upnl)),
        "availableBalance": fmt(m.money(available)),
        "maxWithdrawAmount": fmt(m.money(min(available, v.cross_wallet))),
    }


def _rows(engine: Exchange, account: AccountState, v: Valuation, symbol: str | None, all_symbols: bool) -> list[dict]:
    """One row per (symbol, positionSide) to report: every symbol for v2, else those with a position or orders."""
    held = {(p.position.symbol, p.position.side): p for p in v.positions}
    sides = ("LONG", "SHORT") if account.dual_side else ("BOTH",)
    if symbol is not None:
        engine.rules(symbol)
        symbols = [symbol]
    elif all_symbols:
        symbols = engine.symbols()
    else:
        symbols = sorted({s for s, _ in held} | set(v.order_margin_by_symbol))
    rows = []
    for s in symbols:
        for side in sides:
            view = held.get((s, side))
            if view is None and not all_symbols and s not in v.order_margin_by_symbol:
                continue
            rows.append({"symbol": s, "side": side, "view": view})
    return rows


def _position_fields(engine: Exchange, account: AccountState, row: dict, now: int) -> dict[str, Any]:
    s, side, view = row["symbol"], row["side"], row["view"]
    pv: PositionView | None = view
    leverage = account.leverage_for(s)
    if pv is None:
        mark = engine.mark_price(s, now)
        amount = entry = upnl = im = mm = iw = liq = notional = m.ZERO
        update = 0
    else:
        p = pv.position
        mark, amount, entry, upnl = pv.mark, p.amount, p.entry_price, pv.upnl
        im, mm, iw, liq, notional, update = (
            pv.initial_margin,
            pv.maint_margin,
            p.isolated_wallet,
            pv.liquidation_price,
            pv.notional,
            p.update_time,
        )
    return {
        "symbol": s,
        "positionSide": side,
        "positionAmt": fmt(amount),
        "entryPrice": fmt(entry),
        "breakEvenPrice": fmt(m.break_even_price(amount, entry)),
        "markPrice": fmt(mark),
        "unRealizedProfit": fmt(m.money(upnl)),
        "liquidationPrice": fmt(liq),
        "isolatedMargin": fmt(m.money(iw + upnl) if account.isolated(s) and amount else m.ZERO),
        "notional": fmt(m.money(notional)),
        "isolatedWallet": fmt(iw),
        "initialMargin": fmt(m.money(im)),
        "maintMargin": fmt(m.money(mm)),
        "leverage": leverage,
        "isolated": account.isolated(s),
        "marginType": "isolated" if account.isolated(s) else "cross",
        "maxNotionalValue": fmt(m.max_notional(leverage)),
        "updateTime": update,
    }


def account_body(engine: Exchange, account_id: str, now: int, version: int) -> dict[str, Any]:
    """GET /fapi/v2/account (every symbol) and /fapi/v3/account (only symbols with a position)."""
    v = engine.account_valuation(account_id, now)
    account = engine.accounts[account_id]
    totals = _totals(v)
    engine.equity_log.record(
        account_id, now, totals["totalWalletBalance"], totals["totalUnrealizedProfit"], totals["totalMarginBalance"]
    )
    rows = _rows(engine, account, v, None, all_symbols=version == 2)
    positions = []
    for row in rows:
        f = _position_fields(engine, account, row, now)
        order_im = v.order_margin_by_symbol.get(row["symbol"], m.ZERO)
        if version == 2:
            positions.append(
                {
                    "symbol": f["symbol"],
                    "initialMargin": fmt(m.money(Decimal(f["initialMargin"]) + order_im)),
                    "maintMargin": f["maintMargin"],
                    "unrealizedProfit": f["unRealizedProfit"],
                    "positionInitialMargin": f["initialMargin"],
                    "openOrderInitialMargin": fmt(m.money(order_im)),
                    "leverage": str(f["leverage"]),
                    "isolated": f["isolated"],
                    "entryPrice": f["entryPrice"],
                    "breakEvenPrice": f["breakEvenPrice"],
                    "maxNotional": f["maxNotionalValue"],
                    "bidNotional": "0",
                    "askNotional": "0",
                    "positionSide": f["positionSide"],
                    "positionAmt": f["positionAmt"],
                    "updateTime": f["updateTime"],
                }
            )
        elif row["view"] is not None:
            positions.append(
                {
                    "symbol": f["symbol"],
                    "positionSide": f["positionSide"],
                    "positionAmt": f["positionAmt"],
                    "unrealizedProfit": f["unRealizedProfit"],
                    "isolatedMargin": f["isolatedMargin"],
                    "notional": f["notional"],
                    "isolatedWallet": f["isolatedWallet"],
                    "initialMargin": f["initialMargin"],
                    "maintMargin": f["maintMargin"],
                    "updateTime": f["updateTime"],
                }
            )
    head: dict[str, Any] = {}
    if version == 2:
        head = {
            "feeTier": 0,
            "feeBurn": False,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
        }
    return {**head, **totals, "assets": [_asset(v, now)], "positions": positions}


def balance_body(engine: Exchange, account_id: str, now: int) -> list[dict[str, Any]]:
    v = engine.account_valuation(account_id, now)
    available = max(m.ZERO, v.available)
    return [
        {
            "accountAlias": account_id,
            "asset": "USDT",
            "balance": fmt(m.money(v.wallet)),
            "crossWalletBalance": fmt(m.money(v.cross_wallet)),
            "crossUnPnl": fmt(m.money(v.cross_upnl)),
            "availableBalance": fmt(m.money(available)),
            "maxWithdrawAmount": fmt(m.money(min(available, v.cross_wallet))),
            "marginAvailable": True,
            "updateTime": now,
        }
    ]


def position_risk_body(engine: Exchange, account_id: str, symbol: str | None, now: int, version: int) -> list[dict]:
    """v2: every symbol (or the one asked); v3: only symbols with a position or open orders."""
    v = engine.account_valuation(account_id, now)
    account = engine.accounts[account_id]
    out = []
    for row in _rows(engine, account, v, symbol, all_symbols=version == 2):
        f = _position_fields(engine, account, row, now)
        if version == 2:
            out.append(
                {
                    "symbol": f["symbol"],
                    "positionAmt": f["positionAmt"],
                    "entryPrice": f["entryPrice"],
                    "breakEvenPrice": f["breakEvenPrice"],
                    "markPrice": f["markPrice"],
                    "unRealizedProfit": f["unRealizedProfit"],
                    "liquidationPrice": f["liquidationPrice"],
                    "leverage": str(f["leverage"]),
                    "maxNotionalValue": f["maxNotionalValue"],
                    "marginType": f["marginType"],
                    "isolatedMargin": f["isolatedMargin"],
                    "isAutoAddMargin": "false",
                    "positionSide": f["positionSide"],
                    "notional": f["notional"],
                    "isolatedWallet": f["isolatedWallet"],
                    "updateTime": f["updateTime"],
                }
            )
        else:
            order_im = v.order_margin_by_symbol.get(f["symbol"], m.ZERO)
            out.append(
                {
                    "symbol": f["symbol"],
                    "positionSide": f["positionSide"],
                    "positionAmt": f["positionAmt"],
                    "entryPrice": f["entryPrice"],
                    "breakEvenPrice": f["breakEvenPrice"],
                    "markPrice": f["markPrice"],
                    "unRealizedProfit": f["unRealizedProfit"],
                    "liquidationPrice": f["liquidationPrice"],
                    "isolatedMargin": f["isolatedMargin"],
                    "notional": f["notional"],
                    "marginAsset": "USDT",
                    "isolatedWallet": f["isolatedWallet"],
                    "initialMargin": fmt(m.money(Decimal(f["initialMargin"]) + order_im)),
                    "maintMargin": f["maintMargin"],
                    "positionInitialMargin": f["initialMargin"],
                    "openOrderInitialMargin": fmt(m.money(order_im)),
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": f["updateTime"],
                }
            )
    return out


def _open_orders_weight(params: Any) -> int:
    return 1 if params.get("symbol") else 40


def _depth_weight(params: Any) -> int:
    try:
        return depth_weight(int(params.get("limit") or 500))
    except ValueError:
        return 2  # the handler names the bad limit


def _book_ticker_weight(params: Any) -> int:
    return 2 if params.get("symbol") else 5


# Paths whose POSTs place (or test) orders: the gateway journals each of them in the order-request view.
ORDER_PLACEMENT_PATHS = ("/fapi/v1/order", "/fapi/v1/batchOrders", "/fapi/v1/order/test")


def trading_endpoints(engine: Exchange) -> list[Endpoint]:
    """Every signed account/trade endpoint, plus the API-key-only listenKey ones, for simulator.app to mount."""

    def handler(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Any:
            return fn(request)

        return run

    def threaded(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """For handlers that compute more than a lookup (a 1000-level book): off the event loop's thread."""

        async def run(request: Request) -> Any:
            return await asyncio.to_thread(fn, request)

        return run

    def acct(r: Request) -> str:
        return _account_id(r)

    def op(fn: Callable[[str, Mapping[str, str], int], Any]) -> Callable[[Request], Any]:
        """An engine operation taking (account, parameters, server time), as a request handler."""
        return lambda r: fn(acct(r), r.params, r.server_time_ms)

    def listen_key(r: Request) -> dict[str, str]:
        if r.method == "POST":
            return {"listenKey": engine.new_listen_key(acct(r), r.server_time_ms)}
        if r.method == "PUT":
            return {"listenKey": engine.keepalive_listen_key(acct(r), r.params.get("listenKey"), r.server_time_ms)}
        engine.close_listen_key(acct(r), r.params.get("listenKey"), r.server_time_ms)
        return {}

    signed = Security.SIGNED
    spec: list[tuple[str, str, Callable[[Request], Any], Any, Security, bool]] = [
        ("GET", "/fapi/v2/account", lambda r: account_body(engine, acct(r), r.server_time_ms, 2), 5, signed, False),
        ("GET", "/fapi/v3/account", lambda r: account_body(engine, acct(r), r.server_time_ms, 3), 5, signed, False),
        ("GET", "/fapi/v2/balance", lambda r: balance_body(engine, acct(r), r.server_time_ms), 5, signed, False),
        ("GET", "/fapi/v3/balance", lambda r: balance_body(engine, acct(r), r.server_time_ms), 5, signed, False),
        (
            "GET",
            "/fapi/v2/positionRisk",
            lambda r: position_risk_body(engine, acct(r), r.params.get("symbol") or None, r.server_time_ms, 2),
            5,
            signed,
            False,
        ),
        (
            "GET",
            "/fapi/v3/positionRisk",
            lambda r: position_risk_body(engine, acct(r), r.params.get("symbol") or None, r.server_time_ms, 3),
            5,
            signed,
            False,
        ),
        (
            "POST",
            "/fapi/v1/leverage",
            op(engine.change_leverage),
            1,
            signed,
            False,
        ),
        (
            "POST",
            "/fapi/v1/marginType",
            op(engine.change_margin_type),
            1,
            signed,
            False,
        ),
        ("GET", "/fapi/v1/positionSide/dual", lambda r: engine.position_mode(acct(r)), 30, signed, False),
        (
            "POST",
            "/fapi/v1/positionSide/dual",
            op(engine.change_position_mode),
            1,
            signed,
            False,
        ),
        ("POST", "/fapi/v1/order", op(engine.place_order), 0, signed, True),
        (
            "POST",
            "/fapi/v1/order/test",
            lambda r: engine.place_order(acct(r), r.params, r.server_time_ms, test=True),
            1,
            signed,
            False,
        ),
        (
            "POST",
            "/fapi/v1/countdownCancelAll",
            op(engine.countdown_cancel_all),
            10,
            signed,
            False,
        ),
        ("GET", "/fapi/v1/leverageBracket", lambda r: engine.leverage_bracket(acct(r), r.params), 1, signed, False),
        ("GET", "/fapi/v1/order", op(engine.get_order), 1, signed, False),
        (
            "DELETE",
            "/fapi/v1/order",
            op(engine.cancel_order),
            1,
            signed,
            False,
        ),
        (
            "GET",
            "/fapi/v1/openOrders",
            op(engine.open_orders),
            _open_orders_weight,
            signed,
            False,
        ),
        (
            "DELETE",
            "/fapi/v1/allOpenOrders",
            op(engine.cancel_all),
            1,
            signed,
            False,
        ),
        (
            "GET",
            "/fapi/v1/allOrders",
            op(engine.all_orders),
            5,
            signed,
            False,
        ),
        (
            "GET",
            "/fapi/v1/userTrades",
            op(engine.user_trades),
            5,
            signed,
            False,
        ),
        (
            "GET",
            "/fapi/v1/income",
            op(engine.income_history),
            30,
            signed,
            False,
        ),
        ("GET", "/fapi/v1/commissionRate", lambda r: engine.commission_rate(acct(r), r.params), 20, signed, False),
        ("POST", "/fapi/v1/listenKey", listen_key, 1, Security.API_KEY, False),
        ("PUT", "/fapi/v1/listenKey", listen_key, 1, Security.API_KEY, False),
        ("DELETE", "/fapi/v1/listenKey", listen_key, 1, Security.API_KEY, False),
    ]
    endpoints = [
        Endpoint(method, path, handler(fn), weight, security, counts)
        for method, path, fn, weight, security, counts in spec
    ]
    public = Security.NONE
    endpoints += [
        # Binance counts a batch as 5 orders in the 10 s window and 1 in the minute window.
        Endpoint("POST", "/fapi/v1/batchOrders", handler(op(engine.batch_orders)), 5, signed, True, (5, 1)),
        Endpoint(
            "GET", "/fapi/v1/depth", threaded(lambda r: engine.depth(r.params, r.server_time_ms)), _depth_weight, public
        ),
        Endpoint(
            "GET",
            "/fapi/v1/ticker/bookTicker",
            threaded(lambda r: engine.book_ticker(r.params, r.server_time_ms)),
            _book_ticker_weight,
            public,
        ),
    ]
    return endpoints
