"""The web monitor (`lsq monitor`) over a data directory of scripted stored files, through its JSON API and in a real
browser (Playwright driving Debian's chromium): every panel renders with data, the kill switch writes the halt state
the executor reads, a stored change reaches the page over SSE, and beyond loopback nothing is served without the
token.

Set LSQ_SCREENSHOTS=docs to refresh the README's screenshots (docs/monitor-*.png).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from account_files import Scenario, script_account, write_rows
from playwright.sync_api import Browser, Page, expect, sync_playwright

from collectors.status import write_status
from lsq.config import ConfigError, load_config
from lsq.paths import DataPaths
from lsq.runstate import write_state
from lsq.timelabels import MINUTE_MS, WINDOW_MS, now_ms
from lsq_pipeline.defs.monitoring.alerts import AlertBook
from monitoring.web import data

LSQ = str(Path(sys.executable).with_name("lsq"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEADLINE_MS = 30_000
TZ = "Asia/Shanghai"
expect.set_options(timeout=DEADLINE_MS)  # conditions are waited for generously, never timed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(body) if "json" in kind else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Monitor:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out


def start_monitor(config: Path, *args: str, env: dict[str, str] | None = None) -> Monitor:
    port = _free_port()
    host = "127.0.0.1"
    argv = [LSQ, "--config", str(config), "monitor", "--port", str(port), *args]
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with socket.create_connection((host, port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "the monitor never listened"
            time.sleep(0.2)
    return Monitor(proc, url)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scenario]:
    """A data directory as a running system leaves it: run state, collector heartbeat, two accounts' stores."""
    root = tmp_path_factory.mktemp("monitor")
    paths = DataPaths(root / "data")
    config = root / "lsq.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(paths.root), "timezone": TZ}}))
    now = now_ms()
    me = os.getpid()  # a live pid stands for each part's process
    write_state(
        paths,
        {
            "pid": me,
            "running": True,
            "started_at": now - 3_600_000,
            "parts": [
                {"name": "simulator", "pid": me, "started_at": now - 3_600_000, "oneshot": False},
                {"name": "collector", "pid": me, "started_at": now - 3_590_000, "oneshot": False},
                {"name": "recent backfill", "pid": 1, "started_at": now - 3_590_000, "oneshot": True, "exit_code": 0},
                {"name": "account watcher", "pid": me, "started_at": now - 3_585_000, "oneshot": False},
                {"name": "monitor", "pid": me, "started_at": now - 3_580_000, "oneshot": False},
            ],
        },
    )
    write_status(
        paths.collector_status,
        {
            "running": True,
            "pid": me,
            "started_at": now - 3_590_000,
            "updated_at": now + 3_600_000,  # fresh for the whole module, however slow the machine
            "connections": [{"up": True}, {"up": True}],
            "last_sealed_window": {"partition_key": "2026-12-01-10:55"},
        },
    )
    scenario = script_account(paths, "sim_alpha", now)
    sealed = now // WINDOW_MS * WINDOW_MS - WINDOW_MS
    paths.marker_file(sealed).parent.mkdir(parents=True, exist_ok=True)
    paths.marker_file(sealed).write_text("{}")
    watcher_beat = paths.root / "monitoring" / "sim_alpha" / "status.json"
    watcher_beat.write_text(json.dumps({"pid": me, "updated_ms": now + 3_600_000, "stream": "up"}))
    write_rows(
        paths,
        "sim_beta",
        "snapshots",
        [
            {  # every field, as the watcher stores Binance's account answer
                "time_ms": now - (10 - i) * MINUTE_MS,
                "wallet_balance": 50_000,
                "unrealized_pnl": 0,
                "equity": 50_000,
                "available_balance": 50_000,
                "initial_margin": 0,
                "maint_margin": 0,
                "margin_ratio": 0,
            }
            for i in range(10)
        ],
    )
    book = AlertBook.load(paths.monitoring / "alerts.json")  # the Dagster alert sensor's book, as it records one
    title, text = "sim_alpha deviation", "deviation 15 % > 10 %"
    book.observe("account_state/deviation/sim_alpha", "WARN", now - 600_000, 0, title, text, account="sim_alpha")
    book.save()
    return config, scenario


@pytest.fixture(scope="module")
def monitor(stored: tuple[Path, Scenario]) -> Iterator[Monitor]:
    m = start_monitor(stored[0])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(DEADLINE_MS)
    page.on("pageerror", lambda exc: SCRIPT_ERRORS.append(f"{url}: {exc}"))
    page.on("console", lambda msg: SCRIPT_ERRORS.append(f"{url}: {msg.text}") if msg.type == "error" else None)
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    return page


SCRIPT_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_script_errors() -> Iterator[None]:
    """A page that throws (or logs an error) fails the test that opened it."""
    SCRIPT_ERRORS.clear()
    yield
    assert not SCRIPT_ERRORS, SCRIPT_ERRORS


def _shoot(page: Page, name: str, full_page: bool = True) -> None:
    target = os.environ.get("LSQ_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"monitor-{name}.png"), full_page=full_page)


def _local_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(TZ)).strftime("%Y-%m-%d")


# --- API ---------------------------------------------------------------------------------------------------------


def test_api_figures_match_the_stored_account(monitor: Monitor, stored: tuple[Path, Scenario]) -> None:
    _, sc = stored
    status, summary = _get(f"{monitor.url}/api/accounts/sim_alpha")
    assert status == 200
    assert summary["equity"] == pytest.approx(sc.equities[-1])
    # today's PnL: the equity change since the operator's midnight, the deposit taken out
    tz = ZoneInfo(TZ)
    local = datetime.fromtimestamp(sc.now_ms / 1000, tz)
    midnight = int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    before = [i for i, t in enumerate(sc.snapshot_times) if t < midnight]
    opening = before[-1] if before else 0
    deposit_today = sc.deposit if sc.deposit_ms > sc.snapshot_times[opening] else 0.0
    assert summary["today_pnl"] == pytest.approx(sc.equities[-1] - sc.equities[opening] - deposit_today)

    _, pos = _get(f"{monitor.url}/api/accounts/sim_alpha/positions")
    rows = {r["symbol"]: r for r in pos["rows"]}
    assert set(rows) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"}
    assert rows["BTCUSDT"]["deviation_notional"] == pytest.approx(0.05 * 60_000)
    assert rows["ETHUSDT"]["deviation_notional"] == pytest.approx(0)
    assert rows["SOLUSDT"]["deviation_notional"] == pytest.approx(20 * 150)  # a target of 0: its whole notional
    assert rows["DOGEUSDT"]["deviation_notional"] == pytest.approx(10_000 * 0.2)  # not held: at the decision price
    gross = 0.45 * 60_000 + 8 * 3_000 + 10_000 * 0.2
    assert pos["deviation"]["share"] == pytest.approx(8_000 / gross)
    assert pos["deviation"]["largest_deviation_notional"] == pytest.approx(3_000)
    x = pos["exposure"]
    assert (x["gross"], x["net"], x["long"], x["short"]) == pytest.approx((57_000, 9_000, 33_000, 24_000))
    assert x["largest_share"] == pytest.approx(30_000 / 57_000)
    assert x["leverage"] == pytest.approx(57_000 / sc.equities[-1])

    _, curve = _get(f"{monitor.url}/api/accounts/sim_alpha/equity")
    assert len(curve["time_ms"]) == len(sc.snapshot_times)  # the stored minute curve
    assert curve["summary"]["transfers"] == pytest.approx(sc.deposit)
    jump = sc.equities[len(sc.equities) // 2 + 1] - sc.equities[len(sc.equities) // 2]
    assert jump > 9_000 and curve["summary"]["cum_return"] < 0.01  # the deposit is not a return
    assert curve["summary"]["pnl"] == pytest.approx(sc.equities[-1] - sc.equities[0] - sc.deposit)

    start, end = sc.last_snapshot_ms - 3_600_000, sc.last_snapshot_ms + 3_600_000
    _, report = _get(f"{monitor.url}/api/accounts/sim_alpha/report?start={start}&end={end}")
    totals = report["totals"]
    assert Decimal(totals["fees"]) == sc.fees  # exact strings
    assert Decimal(totals["funding_received"]) == sc.funding_received
    assert Decimal(totals["funding_paid"]) == -sc.funding_paid
    # implementation shortfall of the window the fills traded, against its target file's decision prices
    windows = {w["symbol"]: w for w in report["windows"]}
    assert windows["ETHUSDT"]["shortfall_decision"] == pytest.approx(8 * (3001 - 3000))  # sold 8 at 3000, not 3001
    assert windows["SOLUSDT"]["shortfall_decision"] == pytest.approx(20 * (150 - 149.9))
    assert {"shortfall_decision", "shortfall_arrival", "tracking_error"} <= set(totals)
    status, csv_text = _get(f"{monitor.url}/api/accounts/sim_alpha/report?start={start}&end={end}&format=csv")
    assert status == 200 and csv_text.splitlines()[0].startswith("symbol,") and "BTCUSDT" in csv_text

    _, orders = _get(f"{monitor.url}/api/accounts/sim_alpha/orders")
    assert [o["order_id"] for o in orders] == [13, 12, 11]  # newest first
    _, fills = _get(f"{monitor.url}/api/accounts/sim_alpha/fills?limit=2")
    assert [f["trade_id"] for f in fills] == [104, 103] and fills[0]["price"] == "60100"

    _, procs = _get(f"{monitor.url}/api/status")
    parts = {p["name"]: p for p in procs["parts"]}
    assert parts["collector"]["state"] == "running" and parts["collector"]["heartbeat_ms"]
    assert parts["recent backfill"]["state"] == "finished"
    assert parts["account watcher"]["state"] == "running" and parts["account watcher"]["detail"] == "1 accounts"
    sealed_end = sc.now_ms // WINDOW_MS * WINDOW_MS
    assert procs["pipeline"]["marker"]["window_end_ms"] == sealed_end
    assert procs["pipeline"]["collector"]["state"] == "running"
    assert procs["pipeline"]["last_targets_ms"] == {
        "sim_alpha": sc.last_snapshot_ms // WINDOW_MS * WINDOW_MS,
        "sim_beta": None,
    }
    _, system = _get(f"{monitor.url}/api/system")
    assert system["disk"]["total"] > 0 and 0 < system["memory"]["percent"] <= 100


def test_api_refuses_bad_requests_with_a_message(monitor: Monitor) -> None:
    assert _get(f"{monitor.url}/api/accounts/nobody/positions")[0] == 404
    status, body = _get(f"{monitor.url}/api/accounts/sim_alpha/orders?limit=many")
    assert status == 400 and "limit" in body["error"]
    status, body = _post(f"{monitor.url}/api/accounts/sim_alpha/halt", {"mode": "panic"})
    assert status == 400 and "mode" in body["error"]
    form = urllib.request.Request(f"{monitor.url}/api/accounts/sim_alpha/halt", data=b"mode=halted", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:  # a plain form post (what another site could send)
        urllib.request.urlopen(form, timeout=10)
    assert refused.value.code == 415


# --- browser -----------------------------------------------------------------------------------------------------


def test_every_panel_renders_with_data(monitor: Monitor, browser: Browser, stored: tuple[Path, Scenario]) -> None:
    _, sc = stored
    page = _open(browser, monitor.url)
    status = page.locator("#panel-status tbody")
    expect(status).to_contain_text("collector")
    expect(status.locator("tr", has_text="collector")).to_contain_text("running")
    expect(status).to_contain_text("2/2 connections")
    expect(page.locator("#panel-system")).to_contain_text("GiB")
    accounts = page.locator("#panel-accounts tbody")
    expect(accounts.locator("tr", has_text="sim_alpha")).to_contain_text(f"{sc.equities[-1]:,.2f}")
    expect(accounts.locator("tr", has_text="sim_beta")).to_contain_text("50,000.00")
    expect(page.locator("#panel-alerts")).to_contain_text("deviation 15 % > 10 %")
    positions = page.locator("#panel-positions tbody")
    expect(positions.locator("tr")).to_have_count(4)
    expect(positions.locator("tr", has_text="SOLUSDT")).to_contain_text("3,000.00")
    expect(page.locator("#panel-positions .summary")).to_contain_text("8,000.00")
    expect(page.locator("#panel-positions .exposure")).to_contain_text("gross 57,000.00")
    expect(page.locator("#panel-equity canvas")).to_have_count(1)
    expect(page.locator("#panel-drawdown canvas")).to_have_count(1)
    expect(page.locator("#panel-equity .summary")).to_contain_text(f"{len(sc.snapshot_times)} minutes")
    expect(page.locator("#panel-orders tbody tr")).to_have_count(3)
    expect(page.locator("#panel-fills tbody tr", has_text="60100")).to_have_count(1)
    page.fill("#report-day", _local_day(sc.last_snapshot_ms - 20 * MINUTE_MS))
    page.dispatch_event("#report-day", "change")
    report = page.locator("#panel-report table.by-symbol tbody")
    expect(report.locator("tr", has_text="BTCUSDT")).to_contain_text("18.01")  # fees 12.0 + 6.01
    windows = page.locator("#panel-report table.windows tbody")
    expect(windows.locator("tr", has_text="ETHUSDT")).to_contain_text("8.00")  # shortfall vs the decision price
    expect(page.locator("#panel-report .summary")).to_contain_text("tracking error")
    expect(page.locator("#live")).to_have_text("live")
    _shoot(page, "overview")
    page.close()


def test_kill_switch_halts_the_account_where_the_executor_reads_it(
    monitor: Monitor, browser: Browser, stored: tuple[Path, Scenario]
) -> None:
    settings = load_config(stored[0])
    page = _open(browser, monitor.url)
    panel = page.locator("#panel-killswitch")
    expect(panel.locator(".halt-mode")).to_have_text("active")
    panel.get_by_role("button", name="Halt").click()
    expect(page.locator("#confirm .question")).to_contain_text("Halt sim_alpha?")
    _shoot(page, "kill-switch", full_page=False)
    page.get_by_role("button", name="Cancel").click()
    assert data.halt_state(settings, "sim_alpha")["mode"] == "active"  # cancelled: nothing written

    panel.get_by_role("button", name="Halt").click()
    page.get_by_role("button", name="Confirm").click()
    expect(panel.locator(".halt-mode")).to_have_text("HALTED")
    # the account is not configured for the exchange here: the cancel fails, and the switch holds all the same
    expect(panel.locator(".outcome")).to_contain_text("cancelling resting orders failed")
    assert data.halt_state(settings, "sim_alpha")["mode"] == "halted"
    halt_file = settings.data_dir / "execution" / "sim_alpha" / "halt.json"  # what the executor reads
    assert json.loads(halt_file.read_text())["mode"] == "halt"
    expect(page.locator("#panel-accounts tbody tr", has_text="sim_alpha")).to_contain_text("HALTED")
    expect(page.locator("#panel-alerts ul")).to_contain_text("sim_alpha is halted")

    panel.get_by_role("button", name="Reduce-only").click()
    page.get_by_role("button", name="Confirm").click()
    expect(panel.locator(".halt-mode")).to_have_text("REDUCE-ONLY")
    assert json.loads(halt_file.read_text())["mode"] == "reduce_only"

    panel.get_by_role("button", name="Resume").click()
    page.get_by_role("button", name="Confirm").click()
    expect(panel.locator(".halt-mode")).to_have_text("active")
    assert not halt_file.exists()  # resumed: trading allowed
    page.close()


def test_a_stored_change_reaches_the_page_over_sse(
    monitor: Monitor, browser: Browser, stored: tuple[Path, Scenario]
) -> None:
    config, _ = stored
    paths = DataPaths(load_config(config).data_dir)
    page = _open(browser, monitor.url)
    expect(page.locator("#live")).to_have_text("live")
    row = page.locator("#panel-accounts tbody tr", has_text="sim_beta")
    expect(row).to_contain_text("50,000.00")
    write_rows(
        paths,
        "sim_beta",
        "snapshots",
        [
            {
                "time_ms": now_ms(),
                "equity": 51_234.56,
                "wallet_balance": 51_234.56,
                "unrealized_pnl": 0,
                "available_balance": 51_234.56,
                "initial_margin": 0,
                "maint_margin": 0,
                "margin_ratio": 0,
            }
        ],
    )
    expect(row).to_contain_text("51,234.56")  # no reload: the event stream named the panel
    page.click("#account-tabs button[data-account=sim_alpha]")
    expect(page.locator("#panel-fills tbody tr").first).to_contain_text("60100")
    write_rows(
        paths,
        "sim_alpha",
        "fills",
        [{"trade_id": 105, "time_ms": now_ms(), "symbol": "ETHUSDT", "side": "BUY", "price": "3011.5", "qty": "1"}],
    )
    expect(page.locator("#panel-fills tbody tr").first).to_contain_text("3011.5")
    halt = paths.root / "execution" / "sim_beta" / "halt.json"  # as `lsq halt sim_beta --reduce-only` writes it
    halt.parent.mkdir(parents=True, exist_ok=True)
    halt.write_text(json.dumps({"mode": "reduce_only", "reason": "operator", "since_ms": now_ms()}))
    expect(row).to_contain_text("REDUCE-ONLY")
    halt.unlink()
    expect(row).to_contain_text("active")
    page.close()


# --- beyond loopback ---------------------------------------------------------------------------------------------


def test_beyond_loopback_refuses_to_start_without_a_token(stored: tuple[Path, Scenario]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LSQ_MONITOR_TOKEN"}
    argv = [LSQ, "--config", str(stored[0]), "monitor", "--host", "0.0.0.0", "--port", str(_free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs a token" in done.stderr and "Traceback" not in done.stderr


def test_a_taken_port_or_a_bad_one_gets_one_clear_message(stored: tuple[Path, Scenario]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [LSQ, "--config", str(stored[0]), "monitor", "--port", str(port)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([*argv[:-1], "70000"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "1 to 65535" in done.stderr and "Traceback" not in done.stderr


def test_beyond_loopback_every_request_needs_the_token(stored: tuple[Path, Scenario], browser: Browser) -> None:
    token = "s3cret-token-for-the-test"
    m = start_monitor(stored[0], "--host", "0.0.0.0", env={"LSQ_MONITOR_TOKEN": token})
    try:
        for path in ("/", "/api/status", "/api/accounts", "/static/app.js", "/api/events"):
            status, _ = _get(f"{m.url}{path}")
            assert status == 401, path
        assert _get(f"{m.url}/api/status", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(f"{m.url}/api/status", {"Authorization": f"Bearer {token}"})[0] == 200
        page = browser.new_page()
        page.set_default_timeout(DEADLINE_MS)
        page.goto(f"{m.url}/?token={token}")  # sets the cookie that the page's API calls and event stream carry
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        expect(page.locator("#panel-accounts tbody")).to_contain_text("sim_alpha")
        expect(page.locator("#live")).to_have_text("live")
        assert token not in page.content() and token not in page.url
        page.close()
    finally:
        output = m.stop()
    assert token not in output


def test_every_endpoint_answers_before_anything_is_stored(tmp_path: Path) -> None:
    config = tmp_path / "lsq.yaml"
    accounts = {"mock": {"accounts": [{"account_id": "sim_beta"}]}}
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(tmp_path / "data")}, "execution": accounts}))
    m = start_monitor(config)
    try:
        for path in ("/api", "/api/status", "/api/system", "/api/alerts", "/api/accounts"):
            assert _get(f"{m.url}{path}")[0] == 200, path
        kinds = ("", "/positions", "/orders", "/fills", "/executions", "/equity", "/report", "/report?format=csv")
        for kind in kinds:
            status, body = _get(f"{m.url}/api/accounts/sim_beta{kind}")
            assert status == 200, (kind, body)
        _, summary = _get(f"{m.url}/api/accounts/sim_beta")
        assert summary["snapshot_ms"] is None and summary["halt"]["mode"] == "active"
        _, procs = _get(f"{m.url}/api/status")
        assert procs["parts"] == [] and procs["supervisor"]["running"] is False
    finally:
        m.stop()


# --- without a server: the figures at a chosen time ----------------------------------------------------------------


def test_todays_pnl_counts_from_the_operators_midnight_and_takes_out_a_deposit(tmp_path: Path) -> None:
    config = tmp_path / "lsq.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(tmp_path / "data"), "timezone": TZ}}))
    settings = load_config(config)
    now = int(datetime(2026, 12, 1, 2, 0, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)  # 02:00 local, 18:00 UTC
    sc = script_account(DataPaths(settings.data_dir), "sim_alpha", now)  # 23:00 .. 01:59 local, deposit at 00:30
    midnight = int(datetime(2026, 12, 1, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)
    opening = max(i for i, t in enumerate(sc.snapshot_times) if t < midnight)
    assert sc.snapshot_times[opening] < midnight < sc.deposit_ms
    summary = data.account_summary(settings, "sim_alpha", now)
    assert summary["day_start_ms"] == midnight
    assert summary["today_pnl"] == pytest.approx(sc.equities[-1] - sc.equities[opening] - sc.deposit)
    start, end = data.report_range(settings, "2026-12-01", now)
    assert (start, end) == (midnight, midnight + 86_400_000)


def test_monitor_settings_validate_and_never_echo_the_token(tmp_path: Path) -> None:
    config = tmp_path / "lsq.yaml"
    config.write_text(yaml.safe_dump({"monitor": {"port": 0, "token": "top-secret-value-1"}}))
    with pytest.raises(ConfigError) as bad:
        load_config(config, env={})
    assert "monitor.port" in str(bad.value) and "top-secret-value-1" not in str(bad.value)
    config.write_text(yaml.safe_dump({"monitor": {"host": "0.0.0.0"}}))
    settings = load_config(config, env={"LSQ_MONITOR_TOKEN": "top-secret-value-2"})
    assert not settings.monitor.loopback_only
    assert settings.monitor.token is not None and settings.monitor.token.get_secret_value() == "top-secret-value-2"
    assert "top-secret-value-2" not in repr(settings) and "top-secret-value-2" not in str(settings.model_dump())
    assert load_config(config, env={}).monitor.token is None


# --- the kill switch and the real executor -------------------------------------------------------------------------


def _switch(page: Page, button: str, shown: str) -> None:
    panel = page.locator("#panel-killswitch")
    panel.get_by_role("button", name=button).click()
    page.get_by_role("button", name="Confirm").click()
    expect(panel.locator(".halt-mode")).to_have_text(shown)


def test_the_kill_switch_in_the_page_stops_the_executor(sim_server: Any, tmp_path: Path, browser: Browser) -> None:
    from execution_helpers import assert_converged, flatten, local, positions, trade, write_config, write_target

    from executors.run import run_account
    from lsq.clock import FakeClock

    settings = local(sim_server.settings, tmp_path)
    acct = sim_server.accounts[0].account_id
    flatten(settings, acct)
    trade(settings, acct, "BTCUSDT", "0.05")
    target = write_target(settings, acct, {"BTCUSDT": 500, "ETHUSDT": 3000})
    clock = FakeClock(now_ms())  # each run a minute after the one before, as the journal orders them
    m = start_monitor(write_config(tmp_path, sim_server))
    try:
        page = _open(browser, m.url)
        page.click(f"#account-tabs button[data-account={acct}]")
        _switch(page, "Halt", "HALTED")
        expect(page.locator("#panel-killswitch .outcome")).to_contain_text("of our open orders")  # asked the exchange
        clock.advance(60)
        report = run_account(settings, acct, target, clock, algorithm="market")
        assert report.status == "halted" and report.orders_sent == 0
        assert positions(settings, acct) == {"BTCUSDT": Decimal("0.05")}  # halted: nothing sent

        _switch(page, "Reduce-only", "REDUCE-ONLY")
        clock.advance(60)
        report = run_account(settings, acct, target, clock, algorithm="market")
        held = positions(settings, acct)
        assert "ETHUSDT" not in held and held["BTCUSDT"] < Decimal("0.05")  # only the reduction went through

        _switch(page, "Resume", "active")
        clock.advance(60)
        report = run_account(settings, acct, target, clock, algorithm="market")
        assert report.status == "completed", report
        assert_converged(settings, acct, target)
        runs = page.locator("#panel-executions table.runs tbody tr")  # the journal, brought by the event stream
        expect(runs.first).to_contain_text("completed")
        expect(runs.filter(has_text="halted")).not_to_have_count(0)
        children = page.locator("#panel-executions table.children tbody")
        expect(children.locator("tr", has_text="ETHUSDT").first).to_contain_text("FILLED")
        if os.environ.get("LSQ_SCREENSHOTS"):
            page.locator("#panel-executions").screenshot(
                path=str(Path(os.environ["LSQ_SCREENSHOTS"]) / "monitor-executor.png")
            )
        page.close()
    finally:
        m.stop()
