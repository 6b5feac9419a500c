"""Execution under order faults, with duplicates counted from the simulator's view of every order request
(GET /admin/orders: an order request whose result is `placed` created an order, whatever the client heard)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import start_sim_server
from execution_helpers import assert_converged, flatten, local, write_config, write_target

from executors.journal import Journal, journal_path
from executors.run import run_account
from lsq.clock import SYSTEM_CLOCK, FakeClock
from lsq.exchange import RetryingClient, account_client
from lsq.paths import DataPaths
from simulator.ratelimit import RateLimits


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


def placed(sim: Any, account_id: str, after: int) -> Counter[str]:
    """clientOrderId -> orders placed under it, among the order requests after `after` (seq)."""
    rows = sim.admin(f"orders?account={account_id}&after={after}")["requests"]
    return Counter(r["clientOrderId"] for r in rows if r["result"] == "placed")


def last_seq(sim: Any) -> int:
    rows = sim.admin("orders")["requests"]
    return max((r["seq"] for r in rows), default=0)


def count_children(journal: Path, where: str) -> int:
    """Children matching `where` in a journal another process is writing (0 until its schema exists)."""
    try:
        with sqlite3.connect(journal, timeout=30) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM children WHERE {where}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def with_timeout(settings: Any, seconds: float, batch: bool = True) -> Any:
    executor = settings.execution.executor.model_copy(
        update={"request_timeout_seconds": seconds, "batch_orders": batch}
    )
    return settings.model_copy(update={"execution": settings.execution.model_copy(update={"executor": executor})})


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "timeout_after_place", "count": 2, "hang_s": 6},
        {"kind": "unknown_after_place", "count": 3},
    ],
)
@pytest.mark.parametrize("batch", [True, False], ids=["batchOrders", "single"])
def test_unknown_outcomes_are_queried_never_resent(
    sim_server: Any, tmp_path: Path, fault: dict[str, Any], batch: bool
) -> None:
    settings = with_timeout(local(sim_server.settings, tmp_path), 2, batch)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 4000, "ETHUSDT": -3000, "LTCUSDT": 2000})
    after = last_seq(sim_server)
    sim_server.admin("faults", {"order_faults": [{**fault, "account": acct}]})
    report = run_account(settings, acct, target, FakeClock(), algorithm="twap")
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    orders = placed(sim_server, acct, after)
    assert orders and max(orders.values()) == 1  # 0 duplicates
    endpoints = {r["endpoint"] for r in sim_server.admin(f"orders?account={acct}&after={after}")["requests"]}
    assert ("/fapi/v1/batchOrders" in endpoints) == batch
    faulted = [r for r in sim_server.admin(f"orders?account={acct}&after={after}")["requests"] if r.get("fault")]
    assert len(faulted) >= fault["count"]  # each faulted request (a batch holds several orders) was hit


def test_rate_limits_back_off_with_retry_after(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 3000, "ETHUSDT": -3000})
    after = last_seq(sim_server)
    faults = [
        {"kind": "rate_limited", "count": 2, "retry_after_s": 3, "account": acct},
        {"kind": "banned", "count": 1, "retry_after_s": 7, "account": acct},
    ]
    sim_server.admin("faults", {"order_faults": faults})
    clock = FakeClock()
    report = run_account(settings, acct, target, clock, algorithm="market")
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    assert clock.sleeps.count(3.0) == 2 and clock.sleeps.count(7.0) == 1
    assert max(placed(sim_server, acct, after).values()) == 1


def test_a_long_ban_stops_the_run_and_reports_it(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 3000})
    sim_server.admin("faults", {"order_faults": [{"kind": "banned", "retry_after_s": 3600, "account": acct}]})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "stopped" and any("418" in n for n in report.notes)


def test_margin_fault_shrinks_the_order_and_the_sweep_completes(sim_server: Any, tmp_path: Path) -> None:
    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"ETHUSDT": 4000})
    sim_server.admin("faults", {"order_faults": [{"kind": "margin_insufficient", "account": acct}]})
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")
    assert report.status == "completed", report
    assert any("margin insufficient" in n for n in report.notes)
    assert_converged(settings, acct, target)


@pytest.mark.parametrize("price_match", [None, "QUEUE"], ids=["touch", "priceMatch"])
def test_passive_twap_rests_at_the_touch_and_still_converges(
    sim_server: Any, tmp_path: Path, price_match: str | None
) -> None:
    twap = {
        "name": "twap",
        "twap": {"horizon_seconds": 120, "interval_seconds": 30, "passive": True, "price_match": price_match},
    }
    executor = sim_server.settings.execution.executor.model_copy(
        update={"algorithm": sim_server.settings.execution.executor.algorithm.model_validate(twap)}
    )
    settings = local(sim_server.settings, tmp_path, executor=executor)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 4000, "XRPUSDT": -3000})
    after = last_seq(sim_server)
    report = run_account(settings, acct, target, FakeClock())
    assert report.status == "completed", report
    assert_converged(settings, acct, target)
    with Journal(journal_path(DataPaths(tmp_path), acct)) as journal:
        limits = [c for c in journal.children(run_id=report.run_id) if c.type == "LIMIT"]
    assert limits and all(c.status in ("CANCELED", "FILLED", "EXPIRED", "REJECTED") for c in limits)
    assert account_client(settings, acct).futures_get_open_orders() == []
    assert not report.notes or not any("countdownCancelAll unavailable" in n for n in report.notes)
    requests = sim_server.admin(f"orders?account={acct}&after={after}")["requests"]
    resting = [r for r in requests if r["type"] == "LIMIT" and r["result"] == "placed"]
    assert resting
    client = account_client(settings, acct)
    shown = client.futures_get_order(symbol=resting[0]["symbol"], origClientOrderId=resting[0]["clientOrderId"])
    assert shown["timeInForce"] == "GTX" and shown["priceMatch"] == (price_match or "NONE")


def test_dead_man_switch_cancels_resting_orders_of_a_killed_executor(make_sim_server: Any, tmp_path: Path) -> None:
    server_clock = FakeClock(now_ms=int(time.time() * 1000))
    sim = make_sim_server(clock_base=server_clock)
    settings = local(sim.settings, tmp_path)
    acct = sim.accounts[0].account_id
    twap = {"name": "twap", "twap": {"horizon_seconds": 600, "interval_seconds": 300, "passive": True}}
    config = write_config(tmp_path, sim, algorithm=twap, dead_man_seconds=30)
    target = write_target(settings, acct, {"BTCUSDT": 4000, "ETHUSDT": -4000})
    lsq = Path(sys.executable).parent / "lsq"
    proc = subprocess.Popen(
        [str(lsq), "--config", str(config), "execute", "--account", acct, "--targets", str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal = journal_path(DataPaths(tmp_path), acct)
    client = RetryingClient(account_client(settings, acct), SYSTEM_CLOCK)  # resyncs: the server clock stands still
    deadline = time.monotonic() + 90
    resting = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists():
                armed = count_children(journal, "type='LIMIT' AND status='NEW'")
                if armed >= 1:
                    time.sleep(1.0)  # the countdown is armed right after the slice's orders
                    resting = client.futures_get_open_orders()
                    if resting:
                        break
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert resting, "no passive order rested"
    server_clock.advance(31)  # nobody refreshes the countdown any more

    def still_open() -> list[Any]:
        return [o for symbol in ("BTCUSDT", "ETHUSDT") for o in client.futures_get_open_orders(symbol=symbol)]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and still_open():
        time.sleep(0.5)
    assert still_open() == []
    final = [client.futures_get_order(symbol=o["symbol"], orderId=o["orderId"])["status"] for o in resting]
    assert final == ["CANCELED"] * len(resting)  # cancelled by the exchange, not filled


def test_an_exchange_outage_fails_the_run_and_journals_it(sim_server: Any, tmp_path: Path) -> None:
    from binance.exceptions import BinanceAPIException

    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    target = write_target(settings, acct, {"BTCUSDT": 3000})
    sim_server.admin("faults", {"rest_error_share": 1.0, "rest_error_statuses": [503]})
    try:
        with pytest.raises(BinanceAPIException):
            run_account(settings, acct, target, FakeClock(), algorithm="market")
    finally:
        sim_server.admin("faults/reset", {})
    with Journal(journal_path(DataPaths(tmp_path), acct)) as journal:
        [run] = journal.runs()
    assert run["status"] == "failed"
    report = run_account(settings, acct, target, FakeClock(), algorithm="market")  # the next run resumes
    assert report.status == "completed"
    assert_converged(settings, acct, target)
