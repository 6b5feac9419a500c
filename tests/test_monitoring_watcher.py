"""The account watcher following the real simulator: orders placed through python-binance, the user stream and REST
snapshots into the store; stored equity against the simulator's own valuation, income against /fapi/v1/income."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from factors.sizing import TargetPosition, write_account_targets
from lsq.clock import SYSTEM_CLOCK
from lsq.exchange import rest_client
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS
from monitoring.history import position_changes
from monitoring.records import income_row
from monitoring.report import account_report
from monitoring.state import account_view
from monitoring.store import AccountStore, as_frame
from monitoring.watcher import Watcher, WatcherOptions
from simulator.ratelimit import RateLimits
from tests.conftest import SimServer, start_sim_server
from tests.waiting import wait_for

D = Decimal
# A snapshot every 5 s (events bring one sooner) keeps two accounts well inside the 2400 weight a minute.
FAST = WatcherOptions(snapshot_interval_s=5.0, event_delay_s=0.2, min_gap_s=0.5, income_history_days=1)


class ShiftedClock:
    """The wall clock shifted by `offset_ms`, changed by hand."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return SYSTEM_CLOCK.now_ms() + self.offset_ms

    def monotonic(self) -> float:
        return SYSTEM_CLOCK.monotonic()

    def sleep(self, seconds: float) -> None:
        SYSTEM_CLOCK.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await SYSTEM_CLOCK.asleep(seconds)


class Running:
    """A Watcher on its own event loop in a thread, as `lsq watch` runs it in its own process."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        self.ready.set()
        await self.watcher.run(self.stop_event)

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(60)
        assert not self.thread.is_alive(), "the watcher did not stop"


def exchange_income(client: Any) -> pl.DataFrame:
    rows = client.futures_income_history(startTime=0, limit=1000)
    return as_frame("income", [income_row(r) for r in rows]).sort("tran_id", "income_type", "symbol")


@pytest.fixture(scope="module")
def _module_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """This module's simulator. Its watchers snapshot every 5 s, twelve times the product's pace, so the
    exchange's weight limit is raised as much: no test waits out the watcher's minute of quiet after a 429."""
    sim = start_sim_server(tmp_path_factory.mktemp("sim-monitoring"), limits=RateLimits().scaled(12))
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def alpha(sim_server: Any) -> Iterator[Any]:
    client = rest_client(sim_server.settings, sim_server.settings.execution.mock.accounts[0])
    yield client
    client.close_connection()


def test_the_watcher_stores_what_the_exchange_holds(sim_server: Any, alpha: Any) -> None:
    settings = sim_server.settings
    store = AccountStore(DataPaths(settings.data_dir), "sim_alpha")
    # The targets in force: decided at the last window end, before any order below.
    decided = sim_server.clock.now_ms() // WINDOW_MS * WINDOW_MS
    eth_price = sim_server.market.mark_price("ETHUSDT", decided)
    targets = [TargetPosition("BTCUSDT", D(0), D(0), D("30000")), TargetPosition("ETHUSDT", D("0.5"), D(0), eth_price)]
    write_account_targets(DataPaths(settings.data_dir), "sim_alpha", decided - WINDOW_MS, D("100000"), targets)
    # Before the watcher runs: a fill the stream never shows, found through its income record's tradeId.
    alpha.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.05")
    with Running(Watcher(settings, options=FAST)):
        wait_for("the user stream", lambda: (store.read_status() or {}).get("stream") == "up")
        orders = [
            alpha.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.5"),
            alpha.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.02"),
            alpha.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1"),  # flip
            alpha.futures_create_order(
                symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.03", reduceOnly="true"
            ),
        ]
        done_ms = max(alpha.futures_get_order(symbol=o["symbol"], orderId=o["orderId"])["updateTime"] for o in orders)
        expected_income = exchange_income(alpha)

        def caught_up() -> bool:
            stored = store.read("income").sort("tran_id", "income_type", "symbol")
            after = store.read("snapshots", done_ms + 500)
            return stored.equals(expected_income) and after.height >= 2

        wait_for("income and a snapshot after the last order", caught_up)
        beta = AccountStore(DataPaths(settings.data_dir), "sim_beta")
        wait_for("sim_beta's first snapshot", lambda: beta.latest()[0] is not None)
    assert store.read_status()["stream"] == "stopped"

    # Income equals the exchange's records exactly, every one once.
    assert store.read("income").sort("tran_id", "income_type", "symbol").equals(expected_income)
    assert set(expected_income["income_type"]) >= {"TRANSFER", "COMMISSION", "REALIZED_PNL"}

    # Every stored equity since the last fill is the simulator's own (wallet + unrealized at mark) as it answered
    # the watcher's account request, exactly: /admin/equity keeps each answer (within seconds of the sample's time).
    after = store.read("snapshots", done_ms + 500)
    assert after.height >= 2
    for sample in after.iter_rows(named=True):
        t = sample["time_ms"]
        served = sim_server.admin(f"equity?account=sim_alpha&since={t - 1_000}&until={t + 5_000}")["samples"]
        assert (sample["wallet_balance"], sample["equity"]) in {(D(s["wallet"]), D(s["equity"])) for s in served}
    with pytest.raises(urllib.error.HTTPError) as bad:
        sim_server.admin("equity?since=yesterday")
    assert bad.value.code == 400 and "since must be an integer (ms), got 'yesterday'" in bad.value.read().decode()
    snap, positions = store.latest()
    assert snap is not None
    held = {p["symbol"]: D(p["positionAmt"]) for p in alpha.futures_position_information()}
    assert held == {"ETHUSDT": D("0.5")}
    stored = positions.filter(pl.col("position_amt") != 0)
    assert dict(zip(stored["symbol"], stored["position_amt"], strict=True)) == held
    assert positions.filter(pl.col("symbol") == "BTCUSDT")["mark_price"][0] > 0  # targeted, not held: its mark
    assert beta.latest()[0]["equity"] == D("50000")  # type: ignore[index]
    view = account_view(DataPaths(settings.data_dir), "sim_alpha")
    assert view is not None and view.exposure.long == pytest.approx(float(stored["notional"].sum()))
    assert view.metadata()["equity"] == pytest.approx(float(snap["equity"]))

    # Fills equal userTrades, the one before the stream included; the history reads them as the orders meant.
    fills = store.read("fills")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        trades = alpha.futures_account_trades(symbol=symbol)
        mine = fills.filter(pl.col("symbol") == symbol)
        assert mine["trade_id"].to_list() == [t["id"] for t in trades]
        assert mine["price"].to_list() == [D(t["price"]) for t in trades]
        assert mine["commission"].to_list() == [D(t["commission"]) for t in trades]
    changes = position_changes(fills, store.read("income"))
    by_symbol = {s: changes.filter(pl.col("symbol") == s)["action"].to_list() for s in ("BTCUSDT", "ETHUSDT")}
    assert by_symbol == {"BTCUSDT": ["open", "reduce", "close"], "ETHUSDT": ["open", "flip"]}

    # The report's fees and funding are the exchange's income records, summed exactly; shortfall for the window.
    report = account_report(DataPaths(settings.data_dir), "sim_alpha", 0, snap["time_ms"] + 1)
    by_type = {
        kind: sum(expected_income.filter(pl.col("income_type") == kind)["income"].to_list(), D(0))
        for kind in ("COMMISSION", "FUNDING_FEE", "REALIZED_PNL")
    }
    assert D(report.totals["fees"]) == -by_type["COMMISSION"] and D(report.totals["funding"]) == by_type["FUNDING_FEE"]
    assert D(report.totals["realized_pnl"]) == by_type["REALIZED_PNL"]
    shortfall = {r["symbol"]: r for r in report.windows.to_dicts()}
    assert set(shortfall) == {"BTCUSDT", "ETHUSDT"} and {r["window_ms"] for r in shortfall.values()} == {decided}
    assert shortfall["ETHUSDT"]["decision_price"] == float(eth_price)
    assert shortfall["ETHUSDT"]["arrival_price"] is not None  # the watcher stored ETH's mark before its first fill
    assert shortfall["BTCUSDT"]["arrival_price"] is None  # BTC filled before the watcher ran: no mark to compare
    assert view.deviation is not None and view.deviation.deviation_notional == 0  # 0.5 ETH held as targeted

    # The order log holds every streamed order, ending FILLED.
    log = store.read("orders")
    for order in orders:
        states = log.filter(pl.col("order_id") == order["orderId"])["status"].to_list()
        assert states[0] == "NEW" and states[-1] == "FILLED"


def test_the_watcher_rides_out_dropped_streams_and_rest_errors(sim_server: Any) -> None:
    settings = sim_server.settings
    beta = rest_client(settings, settings.execution.mock.accounts[1])
    store = AccountStore(DataPaths(settings.data_dir), "sim_beta")
    try:
        with Running(Watcher(settings, options=FAST)):
            first = wait_for("the user stream", lambda: (s := store.read_status()) and s["stream"] == "up" and s)
            sim_server.admin("faults", {"rest_error_share": 0.5, "drop_now": True})
            wait_for("a failed snapshot", lambda: (store.read_status() or {}).get("last_error"))
            sim_server.admin("faults/reset", {})

            def reopened() -> bool:
                s = store.read_status() or {}
                return s.get("stream") == "up" and s["stream_since_ms"] > first["stream_since_ms"]

            wait_for("the stream reopened", reopened)
            order = beta.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
            expected = exchange_income(beta)

            def stored() -> bool:
                log = store.read("orders").filter(pl.col("order_id") == order["orderId"])
                return log.height > 0 and store.read("income").sort("tran_id", "income_type", "symbol").equals(expected)

            wait_for("the order from the reopened stream, and every income record", stored)
    finally:
        beta.close_connection()


def test_snapshot_time_comes_from_the_injected_clock(sim_server: Any, tmp_path: Any) -> None:
    from lsq.clock import FakeClock
    from monitoring.watcher import AccountWatcher

    fake_now = sim_server.clock.now_ms() // 1000 * 1000 + 123_456  # not the wall clock, but near it
    clock = FakeClock(now_ms=fake_now)
    account = sim_server.settings.execution.mock.accounts[1]
    own = sim_server.settings.model_copy(
        update={"data": sim_server.settings.data.model_copy(update={"data_dir": tmp_path})}
    )  # a store of its own: a snapshot from the future would confuse the other tests' waits
    watcher = AccountWatcher(own, account, clock=clock)

    async def once() -> Any:
        from lsq.exchange import async_rest_client

        client = await async_rest_client(sim_server.settings, account)
        try:
            return await watcher.refresh(client)
        finally:
            await client.close_connection()

    result = asyncio.run(once())
    assert result.time_ms == fake_now
    assert watcher.store.last_time("snapshots") == fake_now
    assert watcher.store.read_status()["last_snapshot_ms"] == fake_now  # type: ignore[index]


def _config(tmp_path: Any, sim_server: Any) -> dict[str, str]:
    import os

    import yaml

    from lsq.config import DEFAULT_CONFIG_PATH

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["data"]["data_dir"] = str(sim_server.data_dir)
    raw["binance"]["mock"] = {"rest_url": sim_server.rest_url, "ws_url": sim_server.ws_url,
                              "data_url": f"{sim_server.rest_url}/data"}  # fmt: skip
    path = tmp_path / "lsq.yaml"
    path.write_text(yaml.safe_dump(raw))
    return {**os.environ, "LSQ_CONFIG": str(path)}


def test_lsq_watch_runs_until_interrupted(sim_server: Any, tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    env = _config(tmp_path, sim_server)
    bad = subprocess.run([sys.executable, "-m", "lsq.cli", "watch", "--interval", "0"], env=env, capture_output=True)
    assert bad.returncode == 2 and b"--interval must be more than 0" in bad.stderr
    store = AccountStore(DataPaths(sim_server.data_dir), "sim_alpha")
    before = store.last_time("snapshots") or 0
    proc = subprocess.Popen([sys.executable, "-m", "lsq.cli", "watch"], env=env, stderr=subprocess.PIPE)
    try:
        wait_for("a snapshot from lsq watch", lambda: (store.last_time("snapshots") or 0) > before)
        wait_for("its user stream", lambda: (store.read_status() or {}).get("pid") == proc.pid
                 and store.read_status()["stream"] == "up")  # type: ignore[index]  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert store.read_status()["stream"] == "stopped"  # type: ignore[index]


def test_a_deposit_and_a_withdrawal_are_capital_not_return(make_sim_server: Callable[..., SimServer]) -> None:
    from monitoring.state import account_curve, update_equity_curve

    sim = make_sim_server(limits=RateLimits().scaled(12))  # a fresh exchange: this account's first curve
    settings = sim.settings
    paths = DataPaths(settings.data_dir)
    beta = rest_client(settings, settings.execution.mock.accounts[1])
    store = AccountStore(paths, "sim_beta")
    # Once the transfers are booked the watcher's clock jumps a minute, so the curve has a sample after them in a
    # later minute without the test waiting one; every stamp stays after the exchange's time of what it saw.
    clock = ShiftedClock()
    try:
        with Running(Watcher(settings, clock=clock, options=FAST)):
            wait_for("the user stream", lambda: (store.read_status() or {}).get("stream") == "up")
            wait_for("a first snapshot", lambda: store.last_time("snapshots") is not None)
            deposit = sim.admin("transfer", {"account": "sim_beta", "type": "DEPOSIT", "amount": "1000"})
            withdrawal = sim.admin("transfer", {"account": "sim_beta", "type": "WITHDRAW", "amount": "250.5"})
            expected = exchange_income(beta)
            clock.offset_ms = 60_000

            def booked() -> bool:
                stored = store.read("income").sort("tran_id", "income_type", "symbol")
                snap, _ = store.latest()
                wallet = None if snap is None else snap["wallet_balance"]
                return stored.equals(expected) and wallet == D(withdrawal["walletBalance"])

            wait_for("both transfers stored and a snapshot after them", booked)
    finally:
        beta.close_connection()
    transfers = store.read("income").filter(pl.col("income_type") == "TRANSFER")
    assert {deposit["tranId"], withdrawal["tranId"]} <= set(transfers["tran_id"])
    update_equity_curve(paths, "sim_beta", clock.now_ms() + 120_000)  # the last sample's minute, completed
    curve, summary = account_curve(paths, "sim_beta")
    # Nothing is held, so the equity is the wallet: 50000 opened, +1000 -250.5 moved, and none of it is return.
    assert curve.height >= 2 and curve["equity"][-1] == 50_749.5
    assert curve["flow"].sum() == 50_749.5 and summary["transfers"] == 50_749.5 - curve["flow"][0]
    assert summary["cum_return"] == 0.0 and summary["pnl"] == 0.0 and summary["max_drawdown"] == 0.0


def test_a_fresh_store_pages_through_thousands_of_records(sim_server: Any, tmp_path: Any) -> None:
    from monitoring.watcher import AccountWatcher

    engine, clock = sim_server.engine, sim_server.clock
    account = sim_server.settings.execution.mock.accounts[1]
    for i in range(700):  # straight into the engine: the order rate limits would make this take minutes
        side = "BUY" if i % 2 == 0 else "SELL"
        engine.place_order("sim_beta", {"symbol": "ETHUSDT", "side": side, "type": "MARKET", "quantity": "0.01"},
                           clock.now_ms())  # fmt: skip
    now = clock.now_ms()
    everything: dict[int, dict[str, Any]] = {}
    start = 0
    while True:  # the exchange's own records, every page of them
        page = engine.income_history("sim_beta", {"startTime": str(start), "limit": "1000"}, now)
        everything.update({(r["tranId"], r["incomeType"], r["symbol"]): r for r in page})  # type: ignore[misc]
        if len(page) < 1000:
            break
        start = page[-1]["time"]
    trades = engine.user_trades("sim_beta", {"symbol": "ETHUSDT", "fromId": "0", "limit": "1000"}, now)
    assert len(everything) > 1000 and len(trades) == 1000  # more than one page of each

    own = sim_server.settings.model_copy(
        update={"data": sim_server.settings.data.model_copy(update={"data_dir": tmp_path})}
    )
    watcher = AccountWatcher(own, account)

    async def once() -> Any:
        from lsq.exchange import async_rest_client

        client = await async_rest_client(own, account)
        try:
            return await watcher.refresh(client)
        finally:
            await client.close_connection()

    asyncio.run(once())
    expected = as_frame("income", [income_row(r) for r in everything.values()]).sort("tran_id", "income_type", "symbol")
    stored = watcher.store.read("income").filter(pl.col("time_ms") <= now)
    assert stored.sort("tran_id", "income_type", "symbol").equals(expected)
    fills = watcher.store.read("fills").filter(pl.col("symbol") == "ETHUSDT")
    named = expected.filter(pl.col("income_type") == "COMMISSION", pl.col("symbol") == "ETHUSDT")
    assert set(fills["trade_id"]) >= {int(t) for t in named["trade_id"]}  # every fill the income names
