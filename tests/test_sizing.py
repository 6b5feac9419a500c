"""Sizing: capital, gross, neutrality, caps, step rounding toward zero, minQty, MIN_NOTIONAL, universe, files."""

from __future__ import annotations

import json
import math
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from factors.sizing import (
    SizingError,
    account_capital,
    latest_prices,
    quantize,
    size_positions,
    target_notionals,
    write_account_targets,
    write_target_positions,
)
from lsq.config import Account, ModeAccounts, SizingSettings
from lsq.exchange import rest_client
from lsq.exchange.rules import SymbolRules, parse_exchange_info
from lsq.paths import DataPaths
from lsq.targets import positions_file
from lsq.timelabels import parse_label

D = Decimal
BTC = SymbolRules("BTCUSDT", step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("5"))
ETH = SymbolRules("ETHUSDT", step_size=D("0.01"), min_qty=D("0.01"), min_notional=D("5"))
DOGE = SymbolRules("DOGEUSDT", step_size=D("1"), min_qty=D("1"), min_notional=D("5"))
FILTERS = {f.symbol: f for f in (BTC, ETH, DOGE)}


def sizing(**kw: object) -> SizingSettings:
    base = {"gross_leverage": 1.0, "dollar_neutral": False, "max_symbol_share": 1.0}
    return SizingSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_capital_is_wallet_plus_unrealised() -> None:
    assert account_capital({"totalWalletBalance": "1000.5", "totalUnrealizedProfit": "-0.25"}) == D("1000.25")
    with pytest.raises(ValueError, match="totalUnrealizedProfit"):
        account_capital({"totalWalletBalance": "1"})


def test_gross_is_capital_times_leverage_times_weight() -> None:
    out = target_notionals({"a": 0.5, "b": -0.25, "c": 0.25}, 10_000, sizing(gross_leverage=2.0))
    assert out == pytest.approx({"a": 10_000.0, "b": -5_000.0, "c": 5_000.0})


def test_dollar_neutral_books_are_equal_and_sum_to_gross() -> None:
    out = target_notionals({"a": 0.6, "b": 0.1, "c": -0.3}, 1_000, sizing(dollar_neutral=True))
    longs = sum(v for v in out.values() if v > 0)
    shorts = -sum(v for v in out.values() if v < 0)
    assert longs == pytest.approx(500) and shorts == pytest.approx(500)
    assert out["a"] / out["b"] == pytest.approx(6)
    assert target_notionals({"a": 1.0, "b": 2.0}, 1_000, sizing(dollar_neutral=True)) == {"a": 0.0, "b": 0.0}


def test_cap_limits_each_symbol_and_neutrality_survives_it() -> None:
    out = target_notionals({"a": 0.7, "b": 0.1, "c": -0.1, "d": -0.1}, 1_000, sizing(max_symbol_share=0.2))
    assert out == pytest.approx({"a": 200.0, "b": 100.0, "c": -100.0, "d": -100.0})
    neutral = target_notionals(
        {"a": 0.45, "b": 0.05, "c": -0.25, "d": -0.25}, 1_000, sizing(dollar_neutral=True, max_symbol_share=0.2)
    )
    # books 500/500, then a capped 450 -> 200 and c, d -250 -> -200; the short book (400) shrinks to the long (250)
    assert neutral == pytest.approx({"a": 200.0, "b": 50.0, "c": -125.0, "d": -125.0})


def test_quantity_rounds_toward_zero_on_the_step() -> None:
    assert quantize(1_000.0, D("30000"), BTC) == D("0.033")  # 0.0333.. -> 0.033
    assert quantize(-1_000.0, D("30000"), BTC) == D("-0.033")  # toward zero, not down
    assert quantize(999.99, D("100"), ETH) == D("9.99")
    assert quantize(-59.0, D("0.2"), DOGE) == D("-295")
    assert quantize(29.99, D("30000"), BTC) == D("0")  # 0.00099 < step -> 0


def test_min_qty_and_min_notional_give_zero() -> None:
    coarse = SymbolRules("X", step_size=D("0.001"), min_qty=D("0.01"), min_notional=D("0"))
    assert quantize(250.0, D("30000"), coarse) == D("0")  # 0.008 < minQty 0.01
    assert quantize(310.0, D("30000"), coarse) == D("0.01")
    assert quantize(4.5, D("1"), DOGE) == D("0")  # 4 x 1 = 4 < MIN_NOTIONAL 5
    assert quantize(5.5, D("1"), DOGE) == D("5")


def test_size_positions_lists_universe_and_zeroes_outsiders() -> None:
    alpha = {"btc-usdt": 0.5, "eth-usdt": -0.5, "doge-usdt": 0.2}
    prices = {"BTCUSDT": D("30000"), "ETHUSDT": D("2000"), "DOGEUSDT": D("0.2")}
    positions = size_positions(alpha, D("10000"), prices, FILTERS, ["btc-usdt", "eth-usdt"], sizing())
    by = {p.symbol: p for p in positions}
    assert [p.symbol for p in positions] == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
    assert by["DOGEUSDT"].target_position == 0  # not in the universe
    assert by["BTCUSDT"].target_position == D("0.166") and by["ETHUSDT"].target_position == D("-2.5")
    assert by["BTCUSDT"].target_notional == D("0.166") * D("30000")
    for p in positions:
        step = FILTERS[p.symbol].step_size
        assert p.target_position % step == 0


def test_size_positions_refuses_a_weighted_symbol_without_filters() -> None:
    with pytest.raises(ValueError, match="SOLUSDT has weight"):
        size_positions({"sol-usdt": 1.0}, D("100"), {"SOLUSDT": D("20")}, FILTERS, ["sol-usdt"], sizing())


def test_rules_from_exchange_info() -> None:
    info = {
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                ],
            }
        ]
    }
    [(name, rules)] = parse_exchange_info(info).items()
    assert name == "BTCUSDT" and rules.tick_size == D("0.10") and rules.max_qty == D("1000")
    assert (rules.step_size, rules.min_qty, rules.min_notional) == (BTC.step_size, BTC.min_qty, BTC.min_notional)


def test_latest_prices_are_exact_decimals() -> None:
    bars = pl.DataFrame(
        {"symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"], "open_time": [2, 1, 1], "close": ["0.1", "0.3", "1234.56789"]}
    ).with_columns(pl.col("close").cast(pl.Decimal(38, 8)))
    assert latest_prices(bars) == {"BTCUSDT": D("0.1"), "ETHUSDT": D("1234.56789")}


def test_file_is_written_atomically_with_exact_strings(tmp_path: Path) -> None:
    window = parse_label("2026-11-20-288")  # 23:55; the file is stamped with the window end
    positions = size_positions(
        {"btc-usdt": 1.0, "eth-usdt": -1.0},
        D("10000"),
        {"BTCUSDT": D("30000"), "ETHUSDT": D("2000")},
        FILTERS,
        ["btc-usdt", "eth-usdt"],
        sizing(dollar_neutral=True),
    )
    target = write_account_targets(DataPaths(tmp_path), "sim_alpha", window, D("10000"), positions)
    assert target.path == positions_file(DataPaths(tmp_path), "sim_alpha", window)
    assert target.path.name == "sim_alpha_target_positions_20261121_000000.json"
    doc = json.loads(target.path.read_text())
    assert doc["account_id"] == "sim_alpha" and doc["timestamp"] == window + 300_000
    assert doc["partition"] == "2026-11-20-23:55"
    assert doc["positions"] == [
        {"symbol": "BTCUSDT", "target_position": "0.166", "target_notional": 4980.0, "price": "30000"},
        {"symbol": "ETHUSDT", "target_position": "-2.5", "target_notional": -5000.0, "price": "2000"},
    ]
    assert math.isclose(doc["gross_notional"], 9980.0)
    assert not list(tmp_path.rglob("*.tmp"))


# The edge: equity and filters from the simulator, one file per usable account


def test_write_target_positions_per_account_against_the_simulator(sim_server: Any, tmp_path: Path) -> None:
    base = sim_server.settings
    good = base.execution.mock.accounts[0]
    accounts = [
        good,
        Account(account_id="no_keys"),
        Account(account_id="wrong_key", api_key="nope" * 16, api_secret="nope" * 16),
    ]
    execution = base.execution.model_copy(update={"mock": ModeAccounts(accounts=accounts)})
    settings = base.model_copy(update={"execution": execution})
    client = rest_client(settings)
    prices = {t["symbol"]: Decimal(t["lastPrice"]) for t in client.futures_ticker()}
    symbols = sorted(prices)
    alpha = {s: (1.0 if i % 2 else -1.0) for i, s in enumerate(symbols)}
    window = parse_label("2026-11-20-100")
    report = write_target_positions(settings, DataPaths(tmp_path), window, alpha, prices, symbols)
    assert set(report.skipped) == {"no_keys"} and "execution.mock.accounts" in report.skipped["no_keys"]
    assert set(report.failed) == {"wrong_key"} and "2015" in report.failed["wrong_key"]
    outcomes = report.accounts
    assert {a: o.status for a, o in outcomes.items()} == {
        good.account_id: "written",
        "no_keys": "skipped",
        "wrong_key": "failed",
    }
    assert outcomes["wrong_key"].path is None and outcomes[good.account_id].path is not None
    [written] = report.written
    doc = json.loads(written.path.read_text())
    assert written.account_id == good.account_id and Decimal(doc["capital"]) == Decimal(str(good.starting_balance_usdt))
    filters = parse_exchange_info(client.futures_exchange_info())
    for p in doc["positions"]:
        qty = Decimal(p["target_position"])
        assert qty % filters[p["symbol"]].step_size == 0
        assert qty == 0 or (qty > 0) == (alpha[p["symbol"]] > 0)
    assert list((tmp_path / "positions").iterdir()) == [written.path]


def _with_accounts(base: Any, accounts: list[Account], rest_url: str | None = None) -> Any:
    execution = base.execution.model_copy(update={"mock": ModeAccounts(accounts=accounts)})
    update: dict[str, Any] = {"execution": execution}
    if rest_url is not None:
        mock = base.binance.mock.model_copy(update={"rest_url": rest_url})
        update["binance"] = base.binance.model_copy(update={"mock": mock})
    return base.model_copy(update=update)


def test_sizing_raises_only_when_no_account_could_be_sized(sim_server: Any, tmp_path: Path) -> None:
    wrong = [Account(account_id=f"wrong_{i}", api_key="nope" * 16, api_secret="nope" * 16) for i in (1, 2)]
    settings = _with_accounts(sim_server.settings, wrong)
    prices = {t["symbol"]: Decimal(t["lastPrice"]) for t in rest_client(settings).futures_ticker()}
    alpha = {s: (1.0 if i % 2 else -1.0) for i, s in enumerate(sorted(prices))}
    window = parse_label("2026-11-20-100")
    with pytest.raises(SizingError, match="no account could be sized") as info:
        write_target_positions(settings, DataPaths(tmp_path), window, alpha, prices, sorted(prices))
    assert set(info.value.report.failed) == {"wrong_1", "wrong_2"} and not (tmp_path / "positions").exists()
    nobody = _with_accounts(sim_server.settings, [Account(account_id="no_keys")])
    report = write_target_positions(nobody, DataPaths(tmp_path), window, alpha, prices, sorted(prices))
    assert report.written == [] and set(report.skipped) == {"no_keys"}  # nothing to size is not a failure


def test_an_unreachable_exchange_fails_every_account_with_the_reason(sim_server: Any, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    good = sim_server.settings.execution.mock.accounts[:1]
    settings = _with_accounts(sim_server.settings, good, rest_url=f"http://127.0.0.1:{port}")
    with pytest.raises(SizingError) as info:
        write_target_positions(settings, DataPaths(tmp_path), parse_label("2026-11-20-100"), {}, {}, [])
    [reason] = info.value.report.failed.values()
    assert "exchange filters unavailable" in reason and "ConnectionError" in reason
