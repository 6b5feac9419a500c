"""The monitoring domain on real Dagster instances over a data directory written with the monitoring store API:
account_state events from the watcher's snapshots (once each), the checks' levels, the alert sensor against a real
webhook receiver on loopback, and the daily strategy report.

A sensor's SensorResult is applied to the instance the way the sensor daemon does (each runless event, then the
partitions, then its run requests, here executed in process), so the alert sensor reads what the daemon would
have stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from aiohttp import web

from factors.sizing import TargetPosition, write_account_targets
from lsq.clock import FakeClock
from lsq.config import AlertSettings, AlgorithmSettings, CheckThresholds, ConfigError, Settings, Threshold, load_config
from lsq.paths import DataPaths
from lsq.timelabels import WINDOW_MS, parse_day
from lsq_pipeline.defs import monitoring as monitoring_domain
from lsq_pipeline.defs.monitoring.assets import ACCOUNT_STATE, ACCOUNTS
from lsq_pipeline.defs.monitoring.checks import Outcome, evaluate, level
from lsq_pipeline.resources import LsqResource
from monitoring.records import fill_row, income_row, position_rows, snapshot_row
from monitoring.state import account_view
from monitoring.store import AccountStore, as_frame

D = Decimal
DAY = "2026-11-20"
W0 = parse_day(DAY)  # the first window; its targets are decided at W0 + 5 min
T0 = W0 + WINDOW_MS
HORIZON = 240.0  # the shipped executor: TWAP over 240 s
JUDGED = T0 + 270_000  # deviation from the targets decided at T0 is judged from T0 + horizon + the 30 s grace
ACCOUNT = "sim_alpha"  # an account of the shipped configuration's simulator (mock) accounts


def settings_for(data_dir: Path, **alerts: Any) -> Settings:
    base = load_config()
    monitoring = base.monitoring.model_copy(
        update={
            # one symbol is all of the book: its share is not what these tests breach
            "checks": CheckThresholds(
                deviation=Threshold(warn=0.1, error=0.5), largest_share=Threshold(warn=1.1, error=1.2)
            ),
            "alerts": AlertSettings.model_validate(alerts),
        }
    )
    data = base.data.model_copy(update={"data_dir": data_dir, "partitions_start": "2026-11-01"})
    return base.model_copy(update={"data": data, "monitoring": monitoring})


def snapshot(paths: DataPaths, t: int, btc: str, wallet: str = "10000", account: str = ACCOUNT) -> None:
    """What the watcher stores for one full snapshot: the account, and BTC held (0 = not held) at mark 100."""
    risk = [{"symbol": "BTCUSDT", "positionAmt": btc, "entryPrice": "100", "markPrice": "100",
             "notional": str(D(btc) * 100), "unRealizedProfit": "0", "maintMargin": "4"}]  # fmt: skip
    account_row = {"totalWalletBalance": wallet, "totalUnrealizedProfit": "0", "availableBalance": "9000",
                   "totalMaintMargin": "4"}  # fmt: skip
    store = AccountStore(paths, account)
    store.append("snapshots", as_frame("snapshots", [snapshot_row(account_row, t)]))
    store.append("positions", as_frame("positions", position_rows(risk, {"BTCUSDT": D("100")}, t)))


def targets(paths: DataPaths, btc: str = "10", window: int = W0) -> None:
    """BTC targets for the window starting at `window` (decided at its end)."""
    position = TargetPosition("BTCUSDT", D(btc), D(btc) * 100, D(100))
    write_account_targets(paths, ACCOUNT, window, D("10000"), [position])


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    return DataPaths(tmp_path / "data")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:  # sqlite, as under `make run`
        yield instance


class Domain:
    """The monitoring definitions over `settings` with a clock, and the daemon's handling of a sensor's result."""

    def __init__(self, settings: Settings, clock: FakeClock, instance: dg.DagsterInstance) -> None:
        self.resource = LsqResource.for_settings(settings)
        self.defs = dg.Definitions.merge(
            monitoring_domain.defs(settings, clock), dg.Definitions(resources={"lsq": self.resource})
        )
        self.instance = instance
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str) -> dg.SensorResult:
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            resources={"lsq": self.resource},
            definitions=self.defs,
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        for event in result.asset_events or []:
            self.instance.report_runless_asset_event(event)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys or []))
        for request in result.run_requests or []:  # the daemon launches these; here they run in process
            job = self.defs.resolve_job_def(request.job_name or sensor.job_name)
            job.execute_in_process(instance=self.instance, run_config=request.run_config, tags=request.tags)
        self.cursors[name] = result.cursor
        return result


def materializations(instance: dg.DagsterInstance, partition: str = ACCOUNT) -> list[dict[str, Any]]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ACCOUNT_STATE, asset_partitions=[partition]), limit=100, ascending=True
    ).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records]


def check_states(instance: dg.DagsterInstance) -> dict[str, tuple[bool, str]]:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=100, ascending=True
    )
    out = {}
    for r in records:
        e = r.event_log_entry.dagster_event.event_specific_data
        out[e.check_name] = (e.passed, e.severity.value)
    return out


def test_account_state_sensor_records_each_snapshot_once(paths: DataPaths, instance: dg.DagsterInstance) -> None:
    clock = FakeClock(T0 + 60_000)
    domain = Domain(settings_for(paths.root), clock, instance)
    targets(paths)
    snapshot(paths, T0 + 30_000, "9")  # 900 USDT at mark, against a target of 1,000: 10 % off

    domain.tick("account_state_sensor")
    assert set(instance.get_dynamic_partitions(ACCOUNTS.name or "")) == {"sim_alpha", "sim_beta"}
    [first] = materializations(instance)
    assert first["equity"] == 10_000.0
    assert first["gross"] == 900.0 and first["net"] == 900.0
    assert first["deviation"] == pytest.approx(0.1)
    assert first["drawdown"] == 0.0
    assert first["margin_ratio"] == pytest.approx(4 / 10_000)
    assert {"deviation", "exposure", "health"} <= set(check_states(instance))
    assert materializations(instance, "sim_beta") == []  # nothing stored for it: nothing recorded

    clock.advance(15)
    result = domain.tick("account_state_sensor")
    assert len(materializations(instance)) == 1  # the same snapshot is not recorded twice
    assert not result.asset_events

    snapshot(paths, T0 + 90_000, "10", wallet="10100")
    clock.advance(30)
    domain.tick("account_state_sensor")
    second = materializations(instance)[-1]
    assert len(materializations(instance)) == 2
    assert (second["equity"], second["gross"], second["deviation"]) == (10_100.0, 1_000.0, 0.0)

    clock.advance(200)  # the watcher went quiet: no new snapshot, but health turns WARN (older than 180 s)
    result = domain.tick("account_state_sensor")
    assert not result.asset_events and len(materializations(instance)) == 2
    assert check_states(instance)["health"] == (False, "WARN")


def test_levels_at_the_thresholds() -> None:
    above, below = Threshold(warn=0.1, error=0.5), Threshold(warn=0.2, error=0.05, above=False)
    assert [level(v, above) for v in (0.0999, 0.1, 0.4999, 0.5, 2.0, None)] == [
        "OK",
        "WARN",
        "WARN",
        "ERROR",
        "ERROR",
        "OK",
    ]
    assert [level(v, below) for v in (0.21, 0.2, 0.06, 0.05, 0.0)] == ["OK", "WARN", "WARN", "ERROR", "ERROR"]
    with pytest.raises(ValueError, match="error must be at or above warn"):
        Threshold(warn=0.5, error=0.1)


@pytest.mark.parametrize(
    ("btc", "deviation", "exposure"),
    [("9.5", "OK", "OK"), ("8", "WARN", "OK"), ("2", "ERROR", "OK"), ("40", "ERROR", "WARN"), ("60", "ERROR", "ERROR")],
)
def test_checks_on_stored_views(paths: DataPaths, btc: str, deviation: str, exposure: str) -> None:
    """Deviation 5 %, 20 %, 80 % of a 1,000 USDT target; 4,000 and 6,000 USDT held on 10,000 of equity is
    leverage 0.4 / 0.6 against levels 0.3 (WARN) and 0.5 (ERROR)."""
    targets(paths)
    snapshot(paths, JUDGED, btc)
    view = account_view(paths, ACCOUNT)
    assert view is not None
    thresholds = CheckThresholds(
        deviation=Threshold(warn=0.1, error=0.5),
        leverage=Threshold(warn=0.3, error=0.5),
        largest_share=Threshold(warn=1.1, error=1.2),
    )
    got = {o.check: o.level for o in evaluate(view, JUDGED + 30_000, thresholds, HORIZON)}
    assert got == {"deviation": deviation, "exposure": exposure, "health": "OK"}
    stale = {o.check: o for o in evaluate(view, JUDGED + 600_000, thresholds, HORIZON)}["health"]
    assert stale.level == "ERROR" and "snapshot_age_seconds 600" in stale.description


@pytest.mark.parametrize(
    ("algorithm", "judged_from"), [("market", T0 + 30_000), ("twap", JUDGED), ("vwap", T0 + 150_000)]
)
def test_deviation_is_judged_after_the_executors_horizon(paths: DataPaths, algorithm: str, judged_from: int) -> None:
    """80 % off target 30 s after the decision is no breach yet while a TWAP works the target (it keeps the level
    last judged and says it is converging); from decision + horizon + grace it is judged. MARKET has no horizon."""
    thresholds = CheckThresholds(deviation=Threshold(warn=0.1, error=0.5), deviation_grace_seconds=30)
    algo = AlgorithmSettings.model_validate({"name": algorithm, "vwap": {"horizon_seconds": 120}})
    targets(paths)

    def deviation_at(t: int, held: str = "OK") -> Outcome:
        snapshot(paths, t, "2")
        view = account_view(paths, ACCOUNT)
        assert view is not None
        return {o.check: o for o in evaluate(view, t, thresholds, algo.horizon_seconds, held)}["deviation"]  # type: ignore[arg-type]

    early = deviation_at(judged_from - 1)
    if algorithm != "market":  # a market account's first snapshot after the decision is already judged
        assert (early.level, early.passed, early.values["deviation"]) == ("OK", True, pytest.approx(0.8))
        assert early.converging_until_ms == judged_from
        assert early.metadata()["state"].value.startswith("converging until 2026-11-20 ")
        assert deviation_at(judged_from - 1, held="WARN").level == "WARN"
    judged = deviation_at(judged_from)
    assert (judged.level, judged.converging_until_ms, judged.metadata()["state"].value) == ("ERROR", None, "judged")


class Receiver:
    """A webhook endpoint on loopback (a real aiohttp server in its own thread) that keeps every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_breach_alerts_once_then_resolves_once(
    paths: DataPaths, instance: dg.DagsterInstance, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0 + 60_000)
    domain = Domain(settings_for(paths.root, webhook_url=receiver.url, cooldown_seconds=600), clock, instance)
    targets(paths)
    domain.tick("alert_sensor")  # the first tick starts from now
    caplog.set_level(logging.INFO)
    snapshot(paths, T0 + 30_000, "2")  # 80 % off target while the TWAP works it: converging, no alert
    domain.tick("account_state_sensor")
    domain.tick("alert_sensor")
    assert receiver.bodies == [] and check_states(instance)["deviation"] == (True, "WARN")

    snapshot(paths, JUDGED, "2")  # still 80 % off after the horizon and the grace: ERROR
    clock.advance(240)
    domain.tick("account_state_sensor")
    domain.tick("alert_sensor")
    [alert] = receiver.bodies
    assert (alert["state"], alert["severity"], alert["account"]) == ("firing", "ERROR", ACCOUNT)
    assert "deviation" in alert["title"] and "deviation 0.8 ≥ 0.5 (ERROR)" in alert["text"]
    logged = [r.getMessage() for r in caplog.records if r.name == "lsq_pipeline.defs.monitoring.alerts"]
    assert logged == ["[ERROR] deviation on account_state[sim_alpha]: deviation 0.8 ≥ 0.5 (ERROR)"]

    targets(paths, window=T0)  # the next window's targets, decided at T0 + 5 min; still as far off
    for t in (JUDGED + 60_000, T0 + 330_000, T0 + 390_000):  # breached, then converging: no second alert, no resolve
        snapshot(paths, t, "2")
        clock.advance(60)
        domain.tick("account_state_sensor")
        domain.tick("alert_sensor")
    assert len(receiver.bodies) == 1 and check_states(instance)["deviation"] == (False, "ERROR")

    snapshot(paths, T0 + 300_000 + 270_000, "10")  # back on target when the new one is judged
    clock.advance(180)
    domain.tick("account_state_sensor")
    domain.tick("alert_sensor")
    domain.tick("alert_sensor")
    assert [(b["state"], b["severity"]) for b in receiver.bodies] == [("firing", "ERROR"), ("resolved", "RESOLVED")]
    assert "deviation" in receiver.bodies[1]["title"]
    logged = [r.getMessage() for r in caplog.records if r.name == "lsq_pipeline.defs.monitoring.alerts"]
    assert len(logged) == 2 and logged[1].startswith("[RESOLVED] resolved: deviation on account_state[sim_alpha]")
    book = json.loads((paths.monitoring / "alerts.json").read_text())
    assert book["entries"][f"account_state/deviation/{ACCOUNT}"]["open"] is False

    # a restarted sensor (its cursor lost) announces nothing old, and the book remembers what was sent
    domain.cursors["alert_sensor"] = None
    domain.tick("alert_sensor")
    domain.tick("alert_sensor")
    assert len(receiver.bodies) == 2


def test_a_failed_run_alerts_once_within_the_cool_down(
    paths: DataPaths, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    clock = FakeClock(T0)
    domain = Domain(settings_for(paths.root, webhook_url=receiver.url, cooldown_seconds=600), clock, instance)
    domain.tick("alert_sensor")

    @dg.asset
    def broken() -> None:
        raise RuntimeError("the exchange said no")

    assert not dg.materialize([broken], instance=instance, raise_on_error=False).success
    domain.tick("alert_sensor")
    domain.tick("alert_sensor")
    [alert] = receiver.bodies
    assert alert["severity"] == "ERROR" and "failed" in alert["title"] and alert["details"]["run_id"]

    clock.advance(60)  # another failure of the same job within the cool-down: quiet
    dg.materialize([broken], instance=instance, raise_on_error=False)
    domain.tick("alert_sensor")
    assert len(receiver.bodies) == 1
    clock.advance(600)
    dg.materialize([broken], instance=instance, raise_on_error=False)
    domain.tick("alert_sensor")
    assert len(receiver.bodies) == 2


def test_strategy_report_asset_writes_the_day(paths: DataPaths) -> None:
    settings = settings_for(paths.root)
    targets(paths)
    snapshot(paths, T0 + 5_000, "0")
    store = AccountStore(paths, ACCOUNT)
    fill = {"id": 7, "orderId": 70, "time": T0 + 10_000, "symbol": "BTCUSDT", "side": "BUY", "price": "101",
            "qty": "10", "quoteQty": "1010", "commission": "0.404"}  # fmt: skip
    store.append("fills", as_frame("fills", [fill_row(fill)]))
    income = [
        {"tranId": 1, "time": T0 + 10_000, "symbol": "BTCUSDT", "incomeType": "COMMISSION", "income": "-0.404",
         "tradeId": "7"},
        {"tranId": 2, "time": T0 + 3_600_000, "symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-0.25"},
    ]  # fmt: skip
    store.append("income", as_frame("income", [income_row(i) for i in income]))
    domain = Domain(settings, FakeClock(T0), dg.DagsterInstance.ephemeral())
    asset = domain.defs.resolve_assets_def("strategy_report")
    instance = domain.instance
    instance.add_dynamic_partitions("accounts", [ACCOUNT])
    key = dg.MultiPartitionKey({"account": ACCOUNT, "day": DAY})
    result = dg.materialize([asset], partition_key=key, instance=instance)  # its lsq resource is the domain's
    meta = {k: v.value for k, v in result.asset_materializations_for_node("strategy_report")[0].metadata.items()}
    assert (meta["fees"], meta["funding"], meta["turnover"], meta["fills"]) == (0.404, -0.25, 1010.0, 1)
    report = json.loads((paths.monitoring_account(ACCOUNT) / "reports" / DAY / "report.json").read_text())
    assert report["totals"]["fees"] == "0.4040000000" or D(report["totals"]["fees"]) == D("0.404")
    assert (paths.monitoring_account(ACCOUNT) / "reports" / DAY / "by_symbol.csv").exists()


def test_report_schedule_asks_yesterday_for_every_account(paths: DataPaths, instance: dg.DagsterInstance) -> None:
    instance.add_dynamic_partitions("accounts", ["sim_alpha", "sim_beta"])
    domain = Domain(settings_for(paths.root), FakeClock(T0), instance)
    schedule = domain.defs.resolve_schedule_def("strategy_report_schedule")
    at = datetime(2026, 11, 21, 0, 10, tzinfo=UTC)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=domain.defs.get_repository_def()
    )
    requests = schedule.evaluate_tick(context)
    assert sorted(r.partition_key for r in requests.run_requests) == ["sim_alpha|2026-11-20", "sim_beta|2026-11-20"]


def test_monitoring_configuration(tmp_path: Path) -> None:
    """The README's block loads; a WARN level past the ERROR one is refused with one line naming the key, and the
    webhook URL (it may hold a token) is never shown."""
    good = tmp_path / "good.yaml"
    good.write_text(
        "monitoring:\n  checks:\n    available_share: {warn: 0.2, error: 0.05, above: false}\n"
        "  alerts: {webhook_url: 'https://hooks.example/T0/secret', cooldown_seconds: 60}\n"
    )
    settings = load_config(good, env={})
    assert settings.monitoring.checks.available_share.above is False
    assert settings.monitoring.alerts.cooldown_seconds == 60 and "secret" not in repr(settings.monitoring)
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitoring:\n  checks:\n    deviation: {warn: 0.5, error: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={})
    assert "monitoring.checks.deviation: error must be at or above warn (got warn 0.5, error 0.1)" in str(err.value)
    bad.write_text("monitoring:\n  checks:\n    deviation_grace_seconds: -5\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={})
    assert "monitoring.checks.deviation_grace_seconds" in str(err.value)
