"""The data view, the alpha engine's concurrency modes, failure isolation, normalisation and persistence."""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from factors.calculator import AlphaCalculatorBase
from factors.calculators.template import MyFactor
from factors.data_view import AlphaDataView
from factors.discovery import discover
from factors.engine import (
    AlphaRunError,
    CalculatorRun,
    clean_weights,
    load_runs,
    persist,
    run_alpha,
    run_calculators,
)
from factors.synthetic import make_panels
from lsq.clock import FakeClock
from lsq.config import AlphaSettings, CalculatorSettings, StrategySettings
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS, WINDOW_MS, label_of, parse_label

WINDOW = parse_label("2026-11-20-100")
MODES = ("none", "thread", "process")


@pytest.fixture(scope="module")
def panels():
    return make_panels(24, 4, WINDOW, seed=11)


@pytest.fixture(scope="module")
def view(panels) -> AlphaDataView:
    return AlphaDataView(WINDOW, panels.bars, panels.tran_stats, panels.premium_index, panels.funding, history_days=4)


def settings(mode: str, timeout: float = 30.0, min_ratio: float = 0.5, **weights: float) -> StrategySettings:
    return StrategySettings(
        alpha=AlphaSettings(concurrency=mode, timeout_seconds=timeout, min_success_ratio=min_ratio),
        calculators=CalculatorSettings(weights=weights),
    )


# Calculators used by the tests (module level so worker processes can load them).


class Fixed(AlphaCalculatorBase):
    def __init__(self, name: str, weights: dict[str, float] | pl.DataFrame) -> None:
        self.name = name
        self.weights = weights

    def run(self, view: AlphaDataView) -> dict[str, float] | pl.DataFrame:
        return self.weights


class Raises(AlphaCalculatorBase):
    name = "raises"

    def run(self, view: AlphaDataView) -> dict[str, float]:
        raise ZeroDivisionError("factor bug")


class Hangs(AlphaCalculatorBase):
    name = "hangs"

    def __init__(self, pid_file: str) -> None:
        self.pid_file = pid_file

    def run(self, view: AlphaDataView) -> dict[str, float]:
        Path(self.pid_file).write_text(str(os.getpid()))
        time.sleep(60)
        return {}


class Exits(AlphaCalculatorBase):
    """Takes its whole process down, as a crashing native library would."""

    name = "exits"

    def run(self, view: AlphaDataView) -> dict[str, float]:
        os._exit(3)


class LastClose(AlphaCalculatorBase):
    """Reads the shared data: its result changes if anyone corrupts the view."""

    name = "last_close"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        time.sleep(0.05)
        last = view.bars_panel.group_by("symbol").agg(pl.col("close").last())
        return last.select("symbol", (pl.col("close").rank() - pl.col("close").rank().mean()).alias("weight"))


class Vandal(AlphaCalculatorBase):
    """Changes everything it can reach, including the view's own storage."""

    name = "vandal"
    mutates_inputs = True

    def run(self, view: AlphaDataView) -> dict[str, float]:
        panel = view.bars_panel
        panel[0, "close"] = -1.0
        panel.drop_in_place("close")
        bar = view.get_bar(view.universe[0])
        bar.insert_column(0, pl.Series("junk", [0] * bar.height))
        reversed_close = view._frames["bars"].with_columns(pl.col("close").reverse())
        object.__setattr__(view, "_frames", {**view._frames, "bars": reversed_close})
        return {s: 1.0 for s in view.iter_symbols()}


class CarelessVandal(Vandal):
    name = "careless_vandal"
    mutates_inputs = False


# The view


def test_a_calculator_whose_class_was_replaced_does_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps(Fixed("fixed", {"BTCUSDT": 1.0}))
    monkeypatch.setattr(sys.modules[__name__], "Fixed", lambda: None)  # the file edited between pickling and loading
    with pytest.raises(pickle.UnpicklingError, match=r"\.Fixed is no longer a calculator class"):
        pickle.loads(payload)


def test_view_has_no_look_ahead_and_strategy_names(panels) -> None:
    later = make_panels(24, 4, WINDOW + 6 * WINDOW_MS, seed=11)
    view = AlphaDataView(WINDOW, later.bars, later.tran_stats, history_days=2)
    bars = view.bars_panel
    assert bars["open_time"].max() == WINDOW
    assert bars["open_time"].min() == WINDOW + WINDOW_MS - 2 * 86_400_000
    assert view.universe[0] == "s000-usdt" and bars["symbol"].is_sorted()
    assert bars.schema["close"] == pl.Float64
    assert view.label == label_of(WINDOW)


def test_per_symbol_access_tail_and_labels(view: AlphaDataView) -> None:
    bar = view.get_bar("s003-usdt", tail=5)
    assert bar.height == 5 and bar["open_time"].to_list() == [WINDOW - i * WINDOW_MS for i in range(4, -1, -1)]
    assert view.get_bar("S003USDT").height == 4 * 288
    assert view.get_tran_stats("s003-usdt", tail=2)["buy_dolvol4"].len() == 2
    assert view.get_bar("nope-usdt").height == 0
    between = view.get_bar_between(label_of(WINDOW - 2 * WINDOW_MS), label_of(WINDOW))
    assert between["open_time"].unique().sort().to_list() == [WINDOW - 2 * WINDOW_MS, WINDOW - WINDOW_MS, WINDOW]
    assert between.height == 3 * len(view.universe)
    hourly = view.get_tran_stats_between(label_of(WINDOW - 23 * WINDOW_MS), label_of(WINDOW), mode="1h")
    assert hourly.filter(pl.col("symbol") == "s002-usdt").height == 3  # 06:20 .. 08:15 touches hours 06, 07, 08
    five = view.get_tran_stats_between(label_of(WINDOW - 23 * WINDOW_MS), label_of(WINDOW))
    assert hourly["dolvol"].sum() == pytest.approx(five["dolvol"].sum())
    with pytest.raises(ValueError, match="bad label"):
        view.get_bar_between("2026-11-20-999", label_of(WINDOW))
    with pytest.raises(ValueError, match="unknown mode"):
        view.get_bar_between(label_of(WINDOW), label_of(WINDOW), mode="2h")  # type: ignore[arg-type]


def test_view_is_read_only_and_handouts_are_private(view: AlphaDataView) -> None:
    with pytest.raises(AttributeError, match="read-only"):
        view.window_ms = 0
    before = view.get_bar("s001-usdt")["close"].to_list()
    handed = view.get_bar("s001-usdt")
    handed[0, "close"] = -5.0
    symbols = list(view.iter_symbols())
    symbols.clear()
    assert view.get_bar("s001-usdt")["close"].to_list() == before
    assert len(list(view.iter_symbols())) == 24


def test_template_panel_and_per_symbol_forms_agree(view: AlphaDataView) -> None:
    factor = MyFactor()
    panel = dict(factor.run(view).iter_rows())
    per_symbol = factor.run_per_symbol(view)
    assert panel.keys() == per_symbol.keys()
    assert all(math.isclose(panel[s], per_symbol[s], abs_tol=1e-12) for s in panel)


# Concurrency modes


def test_three_modes_give_identical_alphas(view: AlphaDataView) -> None:
    shipped, problems = discover()
    assert not problems
    calculators = [*shipped, LastClose(), Fixed("fixed", {"s000-usdt": 1.0, "s005-usdt": -3.0})]
    results = {m: run_alpha(calculators, view, settings(m, momentum_24h=2.0)) for m in MODES}
    alphas = {m: r.alpha for m, r in results.items()}
    assert alphas["none"].height > 10
    assert alphas["none"].equals(alphas["thread"]) and alphas["none"].equals(alphas["process"])
    for r in results.values():
        assert r.failures == {} and set(r.timings) == {c.name for c in calculators}
        assert math.isclose(r.alpha["weight"].abs().sum(), 1.0)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_failing_and_hanging_calculators_are_isolated(view: AlphaDataView, mode: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    good = Fixed("good", {"s001-usdt": 2.0, "s002-usdt": -2.0})
    started = time.monotonic()
    result = run_alpha([Hangs(str(pid_file)), Raises(), good, LastClose()], view, settings(mode, timeout=1.0))
    assert time.monotonic() - started < 50  # did not wait for the 60 s hang (a generous bound for a loaded machine)
    runs = {r.name: r for r in result.runs}
    assert runs["hangs"].status == "timeout" and "1.0 s" in (runs["hangs"].error or "")
    assert runs["raises"].status == "failed" and "ZeroDivisionError: factor bug" in (runs["raises"].error or "")
    assert "factor bug" in (runs["raises"].traceback or "")
    assert runs["good"].ok and runs["last_close"].ok
    alone = run_alpha([good, LastClose()], view, settings("none"))
    assert result.alpha.equals(alone.alpha)
    if mode == "process":
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_slow_calculator_is_a_timeout_even_without_concurrency(view: AlphaDataView) -> None:
    clock = FakeClock()

    class Slow(Fixed):
        def run(self, view: AlphaDataView) -> dict[str, float]:
            clock.advance(1.5)  # takes 1.5 s by the injected clock, which times mode "none"
            return {"s001-usdt": 1.0}

    calculators = [Slow("slow", {}), Fixed("quick", {"s002-usdt": 1.0})]
    result = run_alpha(calculators, view, settings("none", timeout=0.5), clock=clock)
    assert {r.name: r.status for r in result.runs} == {"slow": "timeout", "quick": "ok"}
    assert result.alpha_dict() == {"s002-usdt": 1.0}


def test_run_fails_clearly_below_min_success_ratio(view: AlphaDataView) -> None:
    calculators = [Raises(), Fixed("bad_type", [1, 2]), Fixed("ok", {"s001-usdt": 1.0})]  # type: ignore[arg-type]
    with pytest.raises(AlphaRunError, match=r"only 1/3 calculators succeeded") as info:
        run_alpha(calculators, view, settings("thread", min_ratio=0.5))
    assert "raises: ZeroDivisionError" in str(info.value) and "bad_type: TypeError" in str(info.value)
    assert info.value.result.success_ratio == pytest.approx(1 / 3)
    assert run_alpha(calculators, view, settings("thread", min_ratio=0.3)).alpha_dict() == {"s001-usdt": 1.0}


# Mutation isolation


@pytest.mark.parametrize("mode", MODES)
def test_a_mutating_calculator_cannot_change_another_ones_result(view: AlphaDataView, mode: str) -> None:
    alone = run_alpha([LastClose()], view, settings(mode)).runs[0].weights
    together = run_alpha([Vandal(), LastClose()], view, settings(mode))
    assert {r.name: r.status for r in together.runs} == {"vandal": "ok", "last_close": "ok"}
    assert together.runs[1].weights.equals(alone)
    assert view.get_bar("s000-usdt")["close"].is_not_null().all()


def test_without_the_flag_the_same_vandal_does_corrupt_a_shared_view(panels) -> None:
    """Control for the test above: it would fail if the engine did not copy the view for `mutates_inputs`."""
    own = AlphaDataView(WINDOW, panels.bars, history_days=4)
    alone = run_alpha([LastClose()], own, settings("none")).runs[0].weights
    together = run_alpha([CarelessVandal(), LastClose()], own, settings("none"))
    assert not together.runs[1].weights.equals(alone)


# Normalisation


def test_cleaning_drops_non_finite_and_foreign_symbols_and_accepts_both_forms() -> None:
    universe = ["btc-usdt", "eth-usdt", "sol-usdt"]
    raw = {"btc-usdt": 1.0, "ETHUSDT": -2.0, "sol-usdt": float("nan"), "doge-usdt": 3.0, "xyz": 1.0}
    frame, dropped = clean_weights(raw, universe)
    assert dict(frame.iter_rows()) == {"btc-usdt": 1.0, "eth-usdt": -2.0} and dropped == 3
    frame, _ = clean_weights(pl.DataFrame({"symbol": ["sol-usdt"], "weight": [float("inf")]}), universe)
    assert frame.height == 0
    with pytest.raises(ValueError, match="more than once"):
        clean_weights(pl.DataFrame({"symbol": ["btc-usdt", "BTCUSDT"], "weight": [1.0, 2.0]}), universe)
    with pytest.raises(ValueError, match="without columns"):
        clean_weights(pl.DataFrame({"sym": ["btc-usdt"]}), universe)


def test_weights_and_normalisation(view: AlphaDataView) -> None:
    a = Fixed("a", {"s001-usdt": 1.0, "s002-usdt": -1.0})  # scaled to ±0.5
    b = Fixed("b", pl.DataFrame({"symbol": ["s001-usdt", "s003-usdt"], "weight": [30.0, 10.0]}))  # 0.75, 0.25
    result = run_alpha([a, b], view, settings("none", b=2.0))
    # a + 2b = {s001: 0.5 + 1.5, s002: -0.5, s003: 0.5}, Σ|w| = 3
    expected = {"s001-usdt": 2.0 / 3, "s002-usdt": -0.5 / 3, "s003-usdt": 0.5 / 3}
    got = result.alpha_dict()
    assert got.keys() == expected.keys() and all(math.isclose(got[k], v) for k, v in expected.items())
    assert result.weights == {"a": 1.0, "b": 2.0}


def test_all_zero_alpha_is_empty_and_says_so(view: AlphaDataView) -> None:
    a = Fixed("a", {"s001-usdt": 1.0})
    b = Fixed("b", {"s001-usdt": -1.0})
    result = run_alpha([a, b], view, settings("none"))
    assert result.alpha.height == 0 and "all-zero" in result.note
    assert run_alpha([Fixed("z", {"s001-usdt": 0.0})], view, settings("none")).alpha.height == 0


def test_persist_writes_vectors_failures_and_alpha(view: AlphaDataView, tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    result = run_alpha(
        [Fixed("a", {"s001-usdt": 1.0, "s002-usdt": -3.0}), Raises(), LastClose()], view, settings("none")
    )
    written = persist(result, paths, WINDOW)
    assert all(p.exists() for p in written) and not list(tmp_path.rglob("*.tmp"))
    alpha_file = next(p for p in written if p.parent.parent == paths.alpha and p.suffix == ".parquet")
    assert pl.read_parquet(alpha_file).equals(result.alpha)
    summary = json.loads(alpha_file.with_suffix(".json").read_text())
    assert summary["failures"]["raises"].startswith("ZeroDivisionError") and summary["label"] == label_of(WINDOW)
    loaded = {r.name: r for r in load_runs(paths, WINDOW, ["a", "raises", "last_close", "never_ran"])}
    assert loaded["a"].weights.equals(result.runs[0].weights)
    assert loaded["raises"].status == "failed" and "factor bug" in (loaded["raises"].traceback or "")
    assert loaded["never_ran"].status == "failed" and "no stored result" in (loaded["never_ran"].error or "")
    with pytest.raises(ValueError, match="not"):
        persist(result, paths, WINDOW + WINDOW_MS)


def test_process_mode_reports_a_calculator_it_cannot_send(view: AlphaDataView) -> None:
    class Local(Fixed):
        """Defined inside a function: no worker process can import it."""

    local = Local("local", {"s001-usdt": 1.0})
    result = run_alpha([local, Fixed("fine", {"s002-usdt": -1.0})], view, settings("process"))
    runs = {r.name: r for r in result.runs}
    assert runs["local"].status == "failed" and "worker process" in (runs["local"].error or "")
    assert result.alpha_dict() == {"s002-usdt": -1.0}


def test_a_crashing_worker_process_fails_only_its_calculator(view: AlphaDataView) -> None:
    calculators = [Exits(), LastClose(), Fixed("after", {"s003-usdt": 1.0}), Exits()]
    calculators[3].name = "exits_again"
    result = run_alpha(calculators, view, StrategySettings(alpha=AlphaSettings(concurrency="process", max_workers=1)))
    runs = {r.name: r for r in result.runs}
    assert runs["exits"].error == "worker died (exit 3)" and runs["exits_again"].status == "failed"
    assert runs["last_close"].ok and runs["after"].ok


# Truthful outcomes: empty vectors, history coverage, cool-down of hanging calculators


def test_a_calculator_whose_every_weight_is_dropped_is_empty_not_ok(view: AlphaDataView) -> None:
    nan = Fixed("all_nan", {"s001-usdt": float("nan"), "s002-usdt": float("inf")})
    foreign = Fixed("foreign", {"doge-usdt": 1.0})
    nothing = Fixed("nothing", {})
    good = Fixed("good", {"s001-usdt": 1.0, "s002-usdt": -1.0})
    result = run_alpha([nan, foreign, nothing, good], view, settings("none", min_ratio=0.25))
    runs = {r.name: r for r in result.runs}
    assert runs["all_nan"].status == "empty" and not runs["all_nan"].ok
    assert "every weight was dropped (2 non-finite or outside the universe)" in (runs["all_nan"].error or "")
    assert runs["foreign"].status == "empty" and runs["nothing"].ok  # no weights at all: no position, not a fault
    assert set(result.failures) == {"all_nan", "foreign"}
    assert result.alpha_dict() == {"s001-usdt": 0.5, "s002-usdt": -0.5}


def test_huge_finite_weights_do_not_overflow_into_an_empty_alpha(view: AlphaDataView) -> None:
    huge = Fixed("huge", {"s001-usdt": 1e308, "s002-usdt": -1e308, "s003-usdt": 5e307})
    result = run_alpha([huge], view, settings("none"))
    assert result.runs[0].ok and result.note == ""
    assert result.alpha_dict() == pytest.approx({"s001-usdt": 0.4, "s002-usdt": -0.4, "s003-usdt": 0.2})


def test_outcome_reports_the_history_the_calculators_got(panels, tmp_path: Path) -> None:
    short = AlphaDataView(WINDOW, panels.bars, history_days=30)  # the panels hold 4 days
    result = run_alpha([Fixed("a", {"s001-usdt": 1.0})], short, settings("none"))
    assert result.history is not None and result.history.short
    assert (result.history.days_asked, result.history.days_available) == (30, 4.0)
    # the note the factors step logs once per window (and `lsq factor run` prints) names the command that fills it
    assert result.history.note().startswith("calculators saw 4 of 30 days of history")
    assert "`lsq backfill --history`" in result.history.note()
    paths = DataPaths(tmp_path)
    written = persist(result, paths, WINDOW)
    summary = json.loads(next(p for p in written if p.parent.parent == paths.alpha and p.suffix == ".json").read_text())
    assert summary["history"] == {
        "days_asked": 30,
        "days_available": 4.0,
        "first_ms": WINDOW + WINDOW_MS - 4 * DAY_MS,
        "short": True,
    }
    [loaded] = load_runs(paths, WINDOW, ["a"])
    assert loaded.history == result.history
    full = run_alpha(
        [Fixed("a", {"s001-usdt": 1.0})], AlphaDataView(WINDOW, panels.bars, history_days=4), settings("none")
    )
    assert full.history is not None and not full.history.short


class Sluggish(AlphaCalculatorBase):
    """Always past a 0.25 s timeout (it takes 1 s by the injected clock that times mode "none"), counting how often
    it was asked to run."""

    name = "sluggish"

    def __init__(self, clock: FakeClock) -> None:
        self.calls = 0
        self.clock = clock

    def run(self, view: AlphaDataView) -> dict[str, float]:
        self.calls += 1
        self.clock.advance(1.0)
        return {"s001-usdt": 1.0}


def test_a_hanging_calculator_is_skipped_for_a_cool_down_after_three_timeouts(
    view: AlphaDataView, tmp_path: Path
) -> None:
    paths = DataPaths(tmp_path)
    strategy = StrategySettings(
        alpha=AlphaSettings(concurrency="none", timeout_seconds=0.25, timeout_streak=3, cooldown_windows=12),
        calculators=CalculatorSettings(),
    )
    clock = FakeClock(WINDOW + WINDOW_MS)
    slow, good = Sluggish(clock), Fixed("good", {"s002-usdt": 1.0})

    def window() -> dict[str, CalculatorRun]:
        # each window is a fresh run, as in Dagster: only data/factors/health.json carries the streak
        runs = run_calculators([slow, good], view, strategy.alpha, paths, clock)
        clock.advance(300)
        return {r.name: r for r in runs}

    assert [window()["sluggish"].status for _ in range(2)] == ["timeout", "timeout"]
    third = window()["sluggish"]
    assert third.status == "timeout" and "skipped for 12 windows" in (third.error or "")
    assert json.loads((paths.factors / "health.json").read_text())["sluggish"]["timeouts"] == 3
    calls = slow.calls
    cooled = [window() for _ in range(11)]
    assert slow.calls == calls  # not run at all during the cool-down
    assert all(w["sluggish"].status == "skipped" and "cool-down" in (w["sluggish"].error or "") for w in cooled)
    assert all(w["good"].ok for w in cooled)
    back = window()["sluggish"]  # 12 windows later it is tried again
    assert slow.calls == calls + 1 and back.status == "timeout" and "skipped for 12 windows" in (back.error or "")
    clock.advance(12 * 300)
    slow_fixed = Fixed("sluggish", {"s001-usdt": 1.0})  # the author fixed it: a success clears the streak
    assert run_calculators([slow_fixed], view, strategy.alpha, paths, clock)[0].ok
    assert json.loads((paths.factors / "health.json").read_text()) == {}


def test_a_corrupt_health_file_is_a_fresh_start_not_a_crash(view: AlphaDataView, tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    (paths.factors).mkdir(parents=True)
    (paths.factors / "health.json").write_text("{not json")
    [run] = run_calculators([Fixed("good", {"s001-usdt": 1.0})], view, settings("none").alpha, paths, FakeClock())
    assert run.ok and json.loads((paths.factors / "health.json").read_text()) == {}
