"""Execution against the real simulator through python-binance: every algorithm converges to the targets (within
one step per symbol) in one-way and hedge mode, with flips, closes of symbols leaving the universe and dust; the
schedules' slices are checked with a FakeClock, so no slice waits for real time; faults, dry runs, live refusal
and the kill switch."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import start_sim_server
from execution_helpers import (
    assert_converged,
    flatten,
    fresh_window,
    local,
    marks,
    order_ids,
    positions,
    trade,
    write_config,
    write_target,
)

from executors import planner as p
from executors.journal import Journal, journal_path
from executors.reconcile import sync_fills
from executors.router import client_order_id, parse_rate_limits, throttle_delay
from executors.run import MARGIN_SHRINKS, MAX_SWEEPS, run_account
from executors.safety import LiveNotConfirmed, read_halt, set_halt
from executors.schedules import interval_weight, twap_schedule, volume_profiles, vwap_schedule
from lsq.clock import FakeClock
from lsq.config import Account, ContractSettings, ExecutionLimits, ModeAccounts
from lsq.exchange import account_client
from lsq.exchange.rules import Bracket, SymbolRules
from lsq.exchange.views import parse_positions
from lsq.paths import DataPaths
from lsq.targets import read_targets
from lsq.timelabels import DAY_MS, HOUR_MS, WINDOW_MS
from simulator.ratelimit import RateLimits

D = Decimal
RULES = {
    "BTCUSDT": SymbolRules(
        "BTCUSDT", D("0.001"), D("0.001"), D("5"), market_step_size=D("0.01"), market_min_qty=D("0.01")
    ),
    "LTCUSDT": SymbolRules("LTCUSDT", D("0.001"), D("0.001"), D("5")),
    "OLDUSDT": SymbolRules("OLDUSDT", D("0.1"), D("0.1"), D("5"), status="SETTLING"),
}
PRICES = {"BTCUSDT": D("30000"), "LTCUSDT": D("80"), "OLDUSDT": D("2")}


@pytest.fixture(scope="module")
def _module_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's simulator, with ten times Binance's request-weight and order limits: the tests run dozens of
    reconciled rebalances a minute, far more than one account does in production; the limits themselves are
    covered by the throttle test and the 429/418 faults."""
    sim = start_sim_server(tmp_path_factory.mktemp("execution-sim"), limits=RateLimits().scaled(10))
    try:
        yield sim
    finally:
        sim.stop()


# ----- pure: planner ---------------------------------------------------------------------------------------------


def test_one_way_flip_is_a_reduce_only_close_then_an_open() -> None:
    orders, _ = p.plan_moves({("BTCUSDT", "BOTH"): D("0.5")}, {("BTCUSDT", "BOTH"): D("-0.3")}, RULES, PRICES)
    assert [(o.leg, o.side, o.quantity, o.reduce_only) for o in orders] == [
        ("R", "SELL", D("0.5"), True),
        ("O", "SELL", D("0.3"), False),
    ]


def test_reductions_come_before_opens_across_symbols() -> None:
    current = {("BTCUSDT", "BOTH"): D("0"), ("LTCUSDT", "BOTH"): D("10")}
    desired = {("BTCUSDT", "BOTH"): D("0.2"), ("LTCUSDT", "BOTH"): D("2")}
    orders, _ = p.plan_moves(current, desired, RULES, PRICES)
    assert [(o.symbol, o.leg) for o in orders] == [("LTCUSDT", "R"), ("BTCUSDT", "O")]


def test_closes_round_up_so_dust_off_the_market_grid_closes() -> None:
    # 0.013 BTC with a market step of 0.01: a close of 0.02 reduce-only (trimmed by the exchange to 0.013)
    orders, _ = p.plan_moves({("BTCUSDT", "BOTH"): D("0.013")}, {}, RULES, PRICES)
    assert [(o.quantity, o.reduce_only) for o in orders] == [(D("0.02"), True)]
    # dust under MIN_NOTIONAL still closes (reduce-only is exempt); an open that small is refused
    dust, _ = p.plan_moves({("LTCUSDT", "BOTH"): D("0.001")}, {("LTCUSDT", "BOTH"): D("0")}, RULES, PRICES)
    assert [(o.quantity, o.reduce_only) for o in dust] == [(D("0.001"), True)]
    small, why = p.plan_moves({}, {("LTCUSDT", "BOTH"): D("0.05")}, RULES, PRICES)
    assert small == [] and "MIN_NOTIONAL" in why["LTCUSDT"]


def test_market_orders_use_the_market_grid_and_limits_the_lot_grid() -> None:
    move = ({}, {("BTCUSDT", "BOTH"): D("0.157")})
    assert p.plan_moves(*move, RULES, PRICES)[0][0].quantity == D("0.15")
    assert p.plan_moves(*move, RULES, PRICES, market=False)[0][0].quantity == D("0.157")


def test_universe_and_trading_status_send_targets_to_zero() -> None:
    targets, notes = p.universe_targets({"BTCUSDT": D("1"), "OLDUSDT": D("5")}, {"LTCUSDT", "GONEUSDT"}, RULES)
    assert targets == {"BTCUSDT": D("1"), "LTCUSDT": D("0"), "OLDUSDT": D("0")}
    assert "SETTLING" in notes["OLDUSDT"] and "exchangeInfo" in notes["GONEUSDT"]


def test_band_skips_small_moves_but_never_a_close() -> None:
    current = {("BTCUSDT", "BOTH"): D("0.100"), ("LTCUSDT", "BOTH"): D("0.05")}
    desired = {("BTCUSDT", "BOTH"): D("0.1003"), ("LTCUSDT", "BOTH"): D("0")}
    out, skipped = p.banded(desired, current, PRICES, D("10"))
    assert out == {("BTCUSDT", "BOTH"): D("0.100"), ("LTCUSDT", "BOTH"): D("0")} and skipped == ["BTCUSDT"]


def test_limits_clip_per_symbol_and_scale_the_gross_book() -> None:
    limits = p.Limits(max_gross_leverage=D("1"), max_symbol_share=D("0.5"))
    out = p.apply_limits({"BTCUSDT": D("1"), "LTCUSDT": D("-50")}, {}, PRICES, D("10000"), RULES, {}, limits)
    # BTC 30000 > 5000 cap -> 0.166; LTC 4000 fits; gross 8980 <= 10000 needs no scaling
    assert out.targets == {"BTCUSDT": D("0.166"), "LTCUSDT": D("-50")}
    scaled = p.apply_limits({"BTCUSDT": D("0.3"), "LTCUSDT": D("-100")}, {}, PRICES, D("10000"), RULES, {},
                            p.Limits(max_gross_leverage=D("1")))  # fmt: skip
    gross = sum(abs(q) * PRICES[s] for s, q in scaled.targets.items())
    assert gross <= D("10000") and scaled.targets["BTCUSDT"] < D("0.3") and "*" in scaled.notes


def test_hedge_mode_targets_split_into_long_and_short_legs() -> None:
    legs = p.leg_targets({"BTCUSDT": D("-0.2")}, dual_side=True)
    assert legs == {("BTCUSDT", "LONG"): D("0"), ("BTCUSDT", "SHORT"): D("-0.2")}
    orders, _ = p.plan_moves({("BTCUSDT", "LONG"): D("0.1")}, legs, RULES, PRICES)
    assert [(o.position_side, o.side, o.leg) for o in orders] == [("LONG", "SELL", "R"), ("SHORT", "SELL", "O")]


def test_hedge_dust_under_min_notional_is_topped_up_then_closed() -> None:
    # hedge-mode closes cannot be reduce-only orders, so MIN_NOTIONAL applies: grow the leg past it, close next pass
    orders, why = p.plan_moves({("LTCUSDT", "LONG"): D("0.01")}, {("LTCUSDT", "LONG"): D("0")}, RULES, PRICES)
    [top] = orders
    assert (top.side, top.position_side, top.leg) == ("BUY", "LONG", "O") and top.quantity * 80 >= 5
    assert "dust" in why["LTCUSDT"]
    close, _ = p.plan_moves({("LTCUSDT", "LONG"): D("0.01") + top.quantity}, {("LTCUSDT", "LONG"): D("0")}, RULES,
                            PRICES)  # fmt: skip
    assert [(o.side, o.leg, o.quantity) for o in close] == [("SELL", "R", D("0.01") + top.quantity)]


def test_a_small_hedge_reduction_waits_instead_of_growing_the_leg() -> None:
    current = {("LTCUSDT", "LONG"): D("10")}  # 800 USDT
    orders, why = p.plan_moves(current, {("LTCUSDT", "LONG"): D("9.96")}, RULES, PRICES)  # a 3.2 USDT slice
    assert orders == [] and "carried" in why["LTCUSDT"]


def test_leverage_bracket_caps_a_symbol_at_the_account_leverage() -> None:
    brackets = {"BTCUSDT": [Bracket(20, D(0), D("3000")), Bracket(10, D("3000"), D("9000"))]}
    out = p.apply_limits({"BTCUSDT": D("1")}, {}, PRICES, D("1000000"), RULES, brackets, p.Limits(leverage=10))
    assert out.targets["BTCUSDT"] == D("0.3") and "cap" in out.notes["BTCUSDT"]
    tight = p.apply_limits({"BTCUSDT": D("1")}, {}, PRICES, D("1000000"), RULES, brackets, p.Limits(leverage=20))
    assert tight.targets["BTCUSDT"] == D("0.1")


def test_split_respects_max_order_notional() -> None:
    order = p.ChildOrder("LTCUSDT", "BOTH", "BUY", D("100"), False, "O")
    pieces = p.split_order(order, RULES["LTCUSDT"], PRICES["LTCUSDT"], D("3000"))
    assert sum(x.quantity for x in pieces) == D("100") and all(x.quantity * 80 <= 3000 for x in pieces)
    assert [x.part for x in pieces] == list(range(len(pieces)))


# ----- pure: schedules, ids, throttling ---------------------------------------------------------------------------


def test_twap_slices_first_at_once_equal_shares() -> None:
    s = twap_schedule(1_000_000, 240, 30)
    assert s.times_ms == tuple(1_000_000 + 30_000 * i for i in range(8))
    assert [round(s.cum("X", i), 6) for i in range(8)] == [round((i + 1) / 8, 6) for i in range(8)]


def test_vwap_follows_the_profile_across_hour_and_day_boundaries() -> None:
    start = 3 * DAY_MS - 2 * WINDOW_MS  # 23:50 UTC: the schedule runs into the next day's first slots
    last_slot, first_slot = DAY_MS // WINDOW_MS - 1, 0
    profile = {last_slot - 1: 1.0, last_slot: 1.0, first_slot: 4.0, 1: 4.0}
    s = vwap_schedule(start, 20 * 60, 5 * 60, {"BTCUSDT": profile})
    shares = [s.cum("BTCUSDT", 0)] + [s.cum("BTCUSDT", i) - s.cum("BTCUSDT", i - 1) for i in range(1, 4)]
    assert shares == pytest.approx([0.1, 0.1, 0.4, 0.4])
    assert s.cum("ETHUSDT", 1) == pytest.approx(0.5)  # no profile: equal shares
    # a slice straddling two slots takes each pro rata; an hour boundary walks on to the next hour's slot
    hour = 5 * HOUR_MS
    hourly = {(hour % DAY_MS) // WINDOW_MS - 1: 2.0, (hour % DAY_MS) // WINDOW_MS: 6.0}
    assert interval_weight(hour - 150_000, hour + 150_000, hourly) == pytest.approx(4.0)


def test_volume_profile_is_the_mean_per_slot_of_day() -> None:
    bars = pl.DataFrame(
        {
            "symbol": ["BTCUSDT"] * 3,
            "open_time": [DAY_MS + 5 * WINDOW_MS, 2 * DAY_MS + 5 * WINDOW_MS, 2 * DAY_MS + 6 * WINDOW_MS],
            "quote_volume": [10.0, 30.0, 7.0],
        }
    )
    assert volume_profiles(bars) == {"BTCUSDT": {5: 20.0, 6: 7.0}}


def test_client_order_ids_are_deterministic_and_valid() -> None:
    pattern = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
    window = 1_764_547_200_000
    a = client_order_id("sim_alpha", window, "BTCUSDT", "RB", 7, 1)
    assert a == client_order_id("sim_alpha", window, "BTCUSDT", "RB", 7, 1) and pattern.match(a)
    assert a != client_order_id("sim_beta", window, "BTCUSDT", "RB", 7, 1)
    assert a != client_order_id("sim_alpha", window + WINDOW_MS, "BTCUSDT", "RB", 7, 1)
    long_name = client_order_id("sim_alpha", window, "1000000BABYDOGEUSDT", "OS", 999, 35)
    assert pattern.match(long_name) and len(long_name) <= 36


def test_throttle_waits_for_the_interval_to_roll_over() -> None:
    limits = parse_rate_limits(
        [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        ]
    )
    assert throttle_delay({"X-MBX-ORDER-COUNT-10S": "12"}, limits, 1_000_003_000) == 0
    assert throttle_delay({"X-MBX-ORDER-COUNT-10S": "295"}, limits, 1_000_003_000) == pytest.approx(7.05)
    assert throttle_delay({"X-MBX-USED-WEIGHT-1M": "2300"}, limits, 1_000_050_000) == pytest.approx(30.05)


# ----- against the simulator --------------------------------------------------------------------------------------


def test_market_converges_with_flip_universe_exit_and_dust(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    trade(settings, acct, "BTCUSDT", "0.05")  # flips short
    trade(settings, acct, "XRPUSDT", "4000")  # leaves the universe
    trade(settings, acct, "LTCUSDT", "0.2")
    trade(settings, acct, "LTCUSDT", "-0.199", reduceOnly="true")  # dust: 0.001 LTC, far under MIN_NOTIONAL
    target = write_target(settings, acct, {"BTCUSDT": -3000, "ETHUSDT": 2500, "BCHUSDT": 0})
    before = len(order_ids(sim_server, acct))
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    assert report.orders_sent == len(order_ids(sim_server, acct)) - before
    assert report.filled_notional > 5000 and report.fees > 0 and report.residual_notional < 100
    meta = report.metadata()  # what the Dagster `executions` asset records
    assert meta["orders_sent"] == report.orders_sent and meta["status"] == "completed"
    assert all(isinstance(v, int | float | str) for v in meta.values())
    # a second run of the same targets finds nothing to do and places nothing
    again = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert again.orders_sent == 0 and again.status == "completed"
    ids = order_ids(sim_server, acct)
    assert not [i for i, n in Counter(ids).items() if n > 1]


def test_twap_slices_on_the_fake_clock_and_converges(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    trade(settings, acct, "EOSUSDT", "-300")
    target = write_target(settings, acct, {"BTCUSDT": 4000, "ETHUSDT": -4000, "EOSUSDT": 1000})
    clock = FakeClock(now_ms=read_targets(target).window_end_ms + 1000)
    report = run_account(settings, acct, target, clock, algorithm="twap")
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    assert sum(clock.sleeps) == pytest.approx(210, abs=1)  # 8 slices, 30 s apart, no real waiting
    with Journal(journal_path(DataPaths(settings.data_dir), acct)) as journal:
        children = journal.children(run_id=report.run_id)
    btc = [c for c in children if c.symbol == "BTCUSDT"]
    assert len({c.seq for c in btc}) >= 6  # one child per slice (a rounded-away slice carries to the next)
    sizes = [c.executed_qty for c in btc]
    assert max(sizes) <= 2 * min(sizes) + D("0.002")  # roughly equal slices
    assert next(c.leg for c in children if c.symbol == "EOSUSDT") == "RB"  # the flip closes first


def test_vwap_sizes_slices_from_stored_bars(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"LTCUSDT": 3000})
    start = read_targets(target).window_end_ms
    start -= start % DAY_MS - 10 * WINDOW_MS  # 00:50 UTC of that day: slots 10..
    day0 = start - start % DAY_MS
    rows = []
    for k in range(1, 4):  # three stored days: slot 10 heavy, slot 11 light
        for slot, volume in ((10, 9.0), (11, 1.0)):
            rows.append(("LTCUSDT", day0 - k * DAY_MS + slot * WINDOW_MS, volume))
    bars_dir = tmp_path / "bars" / "5m"
    bars_dir.mkdir(parents=True)
    frame = pl.DataFrame(rows, schema=["symbol", "open_time", "quote_volume"], orient="row")
    for k in range(1, 4):
        day = day0 - k * DAY_MS
        day_rows = frame.filter((pl.col("open_time") >= day) & (pl.col("open_time") < day + DAY_MS))
        from lsq.timelabels import format_day

        day_rows.write_parquet(bars_dir / f"{format_day(day)}.parquet")
    vwap = {"name": "vwap", "vwap": {"horizon_seconds": 600, "interval_seconds": 300, "lookback_days": 3}}
    executor = settings.execution.executor.model_copy(
        update={"algorithm": settings.execution.executor.algorithm.model_validate(vwap)}
    )
    settings = local(settings, tmp_path, executor=executor)
    report = run_account(settings, acct, target, FakeClock(now_ms=start))
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    with Journal(journal_path(DataPaths(settings.data_dir), acct)) as journal:
        first, second = (c.executed_qty for c in journal.children(run_id=report.run_id) if c.symbol == "LTCUSDT")
    total = first + second
    assert float(first / total) == pytest.approx(0.9, abs=0.02)  # slot 10 carries 90 % of the volume


@pytest.fixture
def hedge_sim(make_sim_server: Any) -> Any:
    return make_sim_server(symbols=6)


def test_hedge_mode_every_algorithm_with_flips_and_closes(hedge_sim: Any, tmp_path: Path) -> None:
    hedge = ContractSettings(position_mode="dual_side", margin_type="CROSSED", leverage=3)
    settings = local(hedge_sim.settings, tmp_path, contract_settings=hedge)
    acct = hedge_sim.accounts[1].account_id
    first = write_target(settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -2000, "XRPUSDT": 1000})
    report = run_account(settings, acct, first, FakeClock(), algorithm="market")
    assert report.status == "completed" and "position mode -> dual_side" in report.notes
    assert_converged(settings, acct, first)
    second = write_target(settings, acct, {"BTCUSDT": -2000, "ETHUSDT": -3000})  # flip, grow, XRP leaves
    report = run_account(settings, acct, second, FakeClock(), algorithm="twap")
    assert report.status == "completed", report
    assert_converged(settings, acct, second)
    sides = {
        (r.symbol, r.position_side)
        for r in parse_positions(account_client(settings, acct).futures_position_information())
        if r.amount
    }
    assert sides == {("BTCUSDT", "SHORT"), ("ETHUSDT", "SHORT")}
    third = write_target(settings, acct, {"BTCUSDT": 2500, "LTCUSDT": -1500})  # flip back, ETH leaves, LTC opens
    report = run_account(settings, acct, third, FakeClock(), algorithm="vwap")
    assert report.status == "completed", report
    assert_converged(settings, acct, third)


def test_dry_run_sends_no_order_request(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path, dry_run=True)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -3000})
    before = len(order_ids(sim_server, acct))
    report = run_account(settings, acct, target, FakeClock(), algorithm="twap")
    assert report.status == "dry_run" and report.orders_sent == 0
    assert len(order_ids(sim_server, acct)) == before and positions(settings, acct) == {}
    assert {o["symbol"] for o in report.orders} == {"BTCUSDT", "ETHUSDT"} and len(report.plan) == 2


def test_live_refuses_without_a_confirmation_naming_the_account(sim_server: Any, tmp_path: Path) -> None:
    live = ModeAccounts(accounts=[Account(account_id="main", api_key="k" * 64, api_secret="s" * 64)])
    settings = local(sim_server.settings, tmp_path, mode="live", live=live)
    with pytest.raises(LiveNotConfirmed, match="--confirm-live main"):
        run_account(settings, "main", None, FakeClock(), confirm_live=["other"])
    run_account(settings, "main", None, FakeClock(), dry_run=True)  # a dry run needs no confirmation


def test_live_refusal_from_the_command_line(
    sim_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from lsq.cli import main

    config = tmp_path / "live.yaml"
    live = {"rest_url": sim_server.rest_url, "ws_url": sim_server.ws_url, "data_url": sim_server.rest_url + "/data"}
    document = {"data": {"data_dir": str(tmp_path)}, "binance": {"live": live},
                "execution": {"mode": "live", "live": {"accounts": [{"account_id": "main"}]}}}  # fmt: skip
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("MAIN_API_KEY", "k" * 64)
    monkeypatch.setenv("MAIN_API_SECRET", "s" * 64)
    monkeypatch.delenv("LSQ_CONFIRM_LIVE", raising=False)
    assert main(["--config", str(config), "execute", "--account", "main"]) == 2
    err = capsys.readouterr().err
    assert "refusing to trade live account 'main'" in err and "LSQ_CONFIRM_LIVE=main" in err and "s" * 64 not in err


def test_rest_faults_and_clock_skew_give_no_duplicates(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 5000, "ETHUSDT": -5000, "LTCUSDT": 2000})
    before = Counter(order_ids(sim_server, acct))
    # 30 % of requests fail (500, 503, 429) before the exchange handles them, and the server clock jumps 3 s back,
    # so the offset measured at start makes every signed request "ahead of the server" (-1021) until resynced
    sim_server.admin("faults", {"rest_error_share": 0.3, "clock_skew_ms": -3000})
    try:
        report = run_account(settings, acct, target, FakeClock(), algorithm="twap")
    finally:
        sim_server.admin("faults/reset", {})
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    placed = Counter(order_ids(sim_server, acct)) - before
    assert placed and max(placed.values()) == 1


def test_halt_and_reduce_only_from_the_command_line(
    sim_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lsq.cli import main

    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    trade(settings, acct, "BTCUSDT", "0.05")
    config = write_config(tmp_path, sim_server)
    target = write_target(settings, acct, {"BTCUSDT": 500, "ETHUSDT": 3000})
    assert main(["--config", str(config), "halt", acct]) == 0
    assert read_halt(DataPaths(tmp_path), acct) is not None
    assert main(["--config", str(config), "execute", "--account", acct, "--targets", str(target)]) == 1
    assert positions(settings, acct) == {"BTCUSDT": D("0.05")}  # halted: nothing sent
    assert main(["--config", str(config), "halt", acct, "--reduce-only"]) == 0
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    held = positions(settings, acct)
    assert "ETHUSDT" not in held and held["BTCUSDT"] < D("0.05")  # only the reduction went through
    assert "reduce-only" in report.skipped["ETHUSDT"]
    assert main(["--config", str(config), "resume", acct]) == 0
    assert main(["--config", str(config), "execute", "--account", acct, "--algorithm", "market"]) == 0
    assert_converged(settings, acct, target)
    capsys.readouterr()
    assert main(["--config", str(config), "orders", "--account", acct]) == 0
    shown = capsys.readouterr().out
    assert "trading allowed" in shown and f"window {read_targets(target).label} market: completed" in shown
    assert shown.count(" FILLED") >= 2


def test_a_newer_target_supersedes_a_running_schedule(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    window = fresh_window()
    old = write_target(settings, acct, {"BTCUSDT": 4000}, window)
    newer: list[Path] = []

    class Clock(FakeClock):
        def sleep(self, seconds: float) -> None:  # the next window's targets land during the first wait
            super().sleep(seconds)
            if not newer:
                newer.append(write_target(settings, acct, {"ETHUSDT": 2000}, window + WINDOW_MS))

    report = run_account(settings, acct, old, Clock(), algorithm="twap")
    assert report.status == "superseded" and report.filled_notional > 0  # the first slice traded, then it stopped
    follow = run_account(settings, acct, None, FakeClock(), algorithm="market")
    assert follow.target_file == str(newer[0])
    assert_converged(settings, acct, newer[0])


def test_drawdown_halts_the_account(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    paths = DataPaths(tmp_path)
    paths.execution(acct).mkdir(parents=True)
    (paths.execution(acct) / "equity_peak.json").write_text('{"peak": "1000000000"}')
    target = write_target(settings, acct, {"BTCUSDT": 1000})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "halted" and report.orders_sent == 0
    halt = read_halt(paths, acct)
    assert halt is not None and "drawdown" in halt.reason
    set_halt(paths, acct, "halt", "test", 0)


def test_sigkill_mid_twap_then_a_new_run_converges_without_duplicates(sim_server: Any, tmp_path: Path) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    twap = {"name": "twap", "twap": {"horizon_seconds": 120, "interval_seconds": 2}}
    config = write_config(tmp_path, sim_server, algorithm=twap)
    target = write_target(settings, acct, {"BTCUSDT": 6000, "ETHUSDT": -6000, "XRPUSDT": 3000})
    before = Counter(order_ids(sim_server, acct))
    lsq = Path(sys.executable).parent / "lsq"
    proc = subprocess.Popen(
        [str(lsq), "--config", str(config), "execute", "--account", acct, "--targets", str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal = journal_path(DataPaths(tmp_path), acct)
    deadline = time.monotonic() + 90
    filled = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists():
                try:
                    with sqlite3.connect(journal, timeout=30) as db:
                        filled = db.execute("SELECT COUNT(*) FROM children WHERE status='FILLED'").fetchone()[0]
                except sqlite3.OperationalError:  # the executor has not created its tables yet
                    filled = 0
                if filled >= 6:
                    break
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert filled >= 6, "the TWAP never got going"
    mid = positions(settings, acct)
    assert mid and abs(mid.get("BTCUSDT", D(0))) < read_targets(target).quantities()["BTCUSDT"]  # killed midway
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "completed", report
    assert any("fills of earlier runs" in n for n in report.notes)  # the killed run's fills are journaled
    assert_converged(settings, acct, target)
    placed = Counter(order_ids(sim_server, acct)) - before
    assert max(placed.values()) == 1  # no client id was ever sent twice


def test_margin_shortfall_shrinks_then_skips_and_never_loops(sim_server: Any, tmp_path: Path) -> None:
    unlimited = ExecutionLimits(max_order_notional=None, max_gross_leverage=None, max_symbol_share=None)
    executor = sim_server.settings.execution.executor.model_copy(update={"limits": unlimited})
    settings = local(sim_server.settings, tmp_path, executor=executor)
    acct = sim_server.accounts[1].account_id  # 50,000 USDT at leverage 2: at most ~100,000 of notional
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 400_000})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert "margin insufficient" in report.skipped["BTCUSDT"]
    held = positions(settings, acct)["BTCUSDT"] * marks(settings, acct)["BTCUSDT"]
    assert 20_000 < held < 110_000  # shrunk orders went through; the rest is reported, not retried forever
    assert report.orders_sent <= (1 + MAX_SWEEPS) * (1 + MARGIN_SHRINKS)
    assert report.residual_notional > 250_000
    flatten(settings, acct)


def test_runs_of_one_account_go_one_at_a_time(sim_server: Any, tmp_path: Path) -> None:
    import fcntl

    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    target = write_target(settings, acct, {"BTCUSDT": 1000})
    lock_path = DataPaths(tmp_path).execution(acct) / "run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "busy" and report.orders_sent == 0


def test_automatic_runs_skip_stale_targets_and_report_missing_ones(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    assert run_account(settings, acct, None, FakeClock()).status == "no_targets"
    target = write_target(settings, acct, {"BTCUSDT": 1000})
    late = FakeClock(now_ms=read_targets(target).window_end_ms + 601_000)  # max_target_age_seconds is 600
    report = run_account(settings, acct, None, late, enforce_max_age=True)
    assert report.status == "stale" and report.orders_sent == 0 and "601 s old" in report.notes[0]


def test_the_exchange_leverage_bracket_caps_a_target(sim_server: Any, tmp_path: Path) -> None:
    unlimited = ExecutionLimits(max_order_notional=None, max_gross_leverage=None, max_symbol_share=None)
    executor = sim_server.settings.execution.executor.model_copy(update={"limits": unlimited})
    at_125 = ContractSettings(leverage=125)  # the simulator's brackets allow 50,000 USDT at 125x
    settings = local(sim_server.settings, tmp_path, executor=executor, contract_settings=at_125)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 80_000})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "completed" and any("BTCUSDT: target" in n and "cap" in n for n in report.notes)
    held = positions(settings, acct)["BTCUSDT"] * marks(settings, acct)["BTCUSDT"]
    assert 45_000 < held <= 50_500 and report.residual_notional > 25_000
    flatten(settings, acct)


def test_a_symbol_whose_contract_setting_fails_is_skipped_and_the_others_trade(sim_server: Any, tmp_path: Path) -> None:
    isolated = ContractSettings(margin_type="ISOLATED", leverage=2)
    settings = local(sim_server.settings, tmp_path, contract_settings=isolated)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    trade(settings, acct, "ETHUSDT", "0.5")  # a cross position: its margin type cannot change (-4048)
    target = write_target(settings, acct, {"ETHUSDT": 3000, "BTCUSDT": 2000})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "completed"
    assert "-4048" in report.skipped["ETHUSDT"] and "ETHUSDT" in report.residual
    assert positions(settings, acct)["ETHUSDT"] == D("0.5")  # untouched
    btc = positions(settings, acct)["BTCUSDT"]
    assert btc == read_targets(target).quantities()["BTCUSDT"]
    rows = account_client(settings, acct).futures_account()["positions"]
    assert next(r for r in rows if r["symbol"] == "BTCUSDT")["isolated"] is True
    # back to cross for the other tests: flat first, then the next run's settings apply
    flatten(settings, acct)
    account_client(settings, acct).futures_change_margin_type(symbol="BTCUSDT", marginType="CROSSED")


class TradesCounted:
    """A real client whose userTrades requests are counted (every other call passes through untouched)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.symbols: list[str] = []

    def futures_account_trades(self, **params: Any) -> Any:
        self.symbols.append(params["symbol"])
        return self._client.futures_account_trades(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_reconciliation_fetches_fills_only_for_orders_the_journal_lacks(sim_server: Any, tmp_path: Path) -> None:
    """Before every rebalance's first order: one userTrades request per symbol with missing fills, not per symbol
    traded in the last week."""
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -2500, "LTCUSDT": 1500})
    assert run_account(settings, acct, target, FakeClock(), algorithm="market").status == "completed"
    client = TradesCounted(account_client(settings, acct))
    with Journal(journal_path(DataPaths(tmp_path), acct)) as journal:
        filled = [c for c in journal.children() if c.executed_qty > 0]
        assert {c.symbol for c in filled} == {"BTCUSDT", "ETHUSDT", "LTCUSDT"}
        assert sync_fills(client, journal, FakeClock().now_ms()) == 0
        assert client.symbols == []  # the run journaled every fill of its orders
        lost = next(c for c in filled if c.symbol == "ETHUSDT")
        with closing(sqlite3.connect(journal_path(DataPaths(tmp_path), acct))) as db, db:
            db.execute("DELETE FROM fills WHERE order_id=?", (lost.order_id,))  # as if killed before the sync
        assert sync_fills(client, journal, FakeClock().now_ms()) >= 1
        assert client.symbols == ["ETHUSDT"]
        assert journal.filled_qty(0)[("ETHUSDT", lost.order_id)] == lost.executed_qty
