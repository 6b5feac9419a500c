"""Discovery of calculators: good files load, every kind of broken file is reported by name and spares the others."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest

from factors.data_view import AlphaDataView
from factors.discovery import BUILTIN_DIR, discover
from factors.synthetic import make_panels
from lsq.cli import main
from lsq.paths import DataPaths
from lsq.stores.panels import write_panel
from lsq.symbols import to_exchange
from lsq.timelabels import DAY_MS, WINDOW_MS, day_start, format_day, label_of, parse_label

GOOD = """
from factors.calculator import AlphaCalculatorBase

class Good(AlphaCalculatorBase):
    name = "{name}"

    def run(self, view):
        return {{s: 1.0 for s in view.iter_symbols()}}

CALCULATOR_INSTANCE = Good()
"""

MANY = """
from factors.calculator import AlphaCalculatorBase

class Scaled(AlphaCalculatorBase):
    def __init__(self, k):
        self.name = f"scaled_{k}"
        self.k = k

    def run(self, view):
        return {s: self.k for s in view.iter_symbols()}

CALCULATOR_INSTANCES = [Scaled(1), Scaled(2)]
"""

FILES = {
    "good.py": GOOD.format(name="good"),
    "many.py": MANY,
    "boom_at_import.py": "x = 1\nraise RuntimeError('kaboom while importing')\n",
    "bad_syntax.py": "def broken(:\n    pass\n",
    "wrong_type.py": "CALCULATOR_INSTANCE = 42\n",
    "class_not_instance.py": GOOD.format(name="classy").replace(
        "CALCULATOR_INSTANCE = Good()", "CALCULATOR_INSTANCE = Good"
    ),
    "bad_name.py": GOOD.format(name="Bad Name!"),
    "dup_a.py": GOOD.format(name="dup"),
    "dup_b.py": GOOD.format(name="dup"),
    "template.py": GOOD.format(name="template_example"),
    "_helpers.py": GOOD.format(name="hidden_helper"),
    "no_exports.py": "HELPER = 1\n",
}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def _problems_by_file(problems: list) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(Path(p.file).name, []).append(p.message)
    return out


def test_good_files_load_and_broken_ones_are_reported_by_file(folder: Path) -> None:
    calculators, problems = discover([folder])
    assert [c.name for c in calculators] == ["dup", "good", "scaled_1", "scaled_2"]
    by_file = _problems_by_file(problems)
    assert "kaboom while importing" in by_file["boom_at_import.py"][0]
    assert "line 2" in by_file["boom_at_import.py"][0]
    assert "syntax error at line 1" in by_file["bad_syntax.py"][0]
    assert "exports a int" in by_file["wrong_type.py"][0]
    assert "not an instance" in by_file["class_not_instance.py"][0]
    assert "'Bad Name!'" in by_file["bad_name.py"][0]
    [dup] = by_file["dup_b.py"]
    assert "duplicate calculator name 'dup'" in dup and str(folder / "dup_a.py") in dup and "refused" in dup
    assert {"template.py", "_helpers.py", "no_exports.py", "good.py", "many.py", "dup_a.py"}.isdisjoint(by_file)
    assert all(str(folder) in p.file for p in problems)


def test_a_new_file_reusing_a_shipped_name_is_refused_and_the_shipped_factor_kept(tmp_path: Path) -> None:
    (tmp_path / "aaa_copy.py").write_text(GOOD.format(name="momentum_24h") + "\nCALCULATOR_INSTANCES = [Good()]\n")
    calculators, problems = discover([BUILTIN_DIR, tmp_path])
    [kept] = [c for c in calculators if c.name == "momentum_24h"]
    assert type(kept).__module__ == "factors.calculators.momentum_24h"
    refused = [p for p in problems if "duplicate" in p.message]
    assert [Path(p.file).name for p in refused] == ["aaa_copy.py", "aaa_copy.py"]
    assert all(str(BUILTIN_DIR / "momentum_24h.py") in p.message and "refused" in p.message for p in refused)


def test_discovered_calculators_run(folder: Path) -> None:
    calculators, _ = discover([folder])
    panels = make_panels(3, 1, parse_label("2026-11-20-010"))
    view = AlphaDataView(panels.window_ms, panels.bars, history_days=1)
    by_name = {c.name: c for c in calculators}
    assert by_name["scaled_2"].run(view) == {"s000-usdt": 2, "s001-usdt": 2, "s002-usdt": 2}


def test_enabled_restricts_and_names_missing_ones(folder: Path) -> None:
    calculators, problems = discover([folder], enabled=["scaled_2", "good", "not_there"])
    assert [c.name for c in calculators] == ["good", "scaled_2"]
    assert any("'not_there' was not found" in p.message for p in problems)


def test_a_weight_for_no_loaded_calculator_is_a_problem(folder: Path) -> None:
    _, problems = discover([folder], enabled=["good"], weights=["good", "goood", "scaled_1"])
    weights = sorted(p.message for p in problems if p.file == "strategy.calculators.weights")
    assert weights == [
        "weight for 'goood' has no effect: no such calculator is loaded",
        "weight for 'scaled_1' has no effect: no such calculator is loaded",
    ]


def test_a_fixed_file_loads_on_the_next_discovery(folder: Path) -> None:
    (folder / "bad_syntax.py").write_text(GOOD.format(name="fixed"))
    calculators, problems = discover([folder])
    assert "fixed" in [c.name for c in calculators]
    assert "bad_syntax.py" not in _problems_by_file(problems)


def test_shipped_calculators_load_cleanly_and_template_is_not_one() -> None:
    calculators, problems = discover()
    assert problems == []
    names = [c.name for c in calculators]
    assert {"mean_buy_dolvol4_over_dolvol_rank", "momentum_24h", "funding_carry", "testnet_volume_rank"} <= set(names)
    template = importlib.import_module("factors.calculators.template")
    assert template.CALCULATOR_INSTANCE.name not in names
    assert (BUILTIN_DIR / "template.py").exists()


# The command line


@pytest.fixture()
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two days of synthetic panels in the pipeline's storage, the data directory set through LSQ_DATA_DIR."""
    window = parse_label("2026-11-20-100")
    panels = make_panels(8, 2, window)
    paths = DataPaths(tmp_path / "data")
    lo = day_start(window + WINDOW_MS - 2 * DAY_MS)
    for kind in ("bars", "tran_stats", "premium_index", "funding"):
        write_panel(paths, kind, getattr(panels, kind), lo, window + WINDOW_MS)
    monkeypatch.setenv("LSQ_DATA_DIR", str(paths.root))
    return label_of(window)


def test_cli_runs_one_factor_and_prints_weights_and_timing(
    stored: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["factor", "run", "testnet_volume_rank", "--at", stored, "--top", "2"]) == 0
    out = capsys.readouterr()
    assert "8 symbols" in out.out and "ran in" in out.out and "long 4, short 4" in out.out
    assert out.out.count("-usdt") == 4
    assert "no v2 universe" in out.err
    assert main(["factor", "run", "scaled_2", "--at", stored, "--folder", str(folder)]) == 0
    assert main(["factor", "run", "nope", "--at", stored]) == 2
    assert "no calculator named 'nope'" in capsys.readouterr().err
    assert main(["factor", "run", "testnet_volume_rank", "--at", "2026-11-20-300"]) == 2
    assert "bad label" in capsys.readouterr().err
    # the same window by its partition key (start) and its positions stamp (end): the same weights
    by_label = [line for line in out.out.splitlines() if "-usdt" in line]
    for name in ("2026-11-20-08:15", "20261120_082000"):
        assert main(["factor", "run", "testnet_volume_rank", "--at", name, "--top", "2"]) == 0
        again = capsys.readouterr().out
        assert f"at {stored}:" in again and [line for line in again.splitlines() if "-usdt" in line] == by_label


def test_cli_reports_a_failing_factor(stored: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "fails.py").write_text(GOOD.format(name="fails").replace("return {", "raise KeyError('oops'); return {"))
    assert main(["factor", "run", "fails", "--at", stored, "--folder", str(bad)]) == 1
    assert "KeyError: 'oops'" in capsys.readouterr().err


def test_cli_lists_calculators_and_problems(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["factor", "list", "--folder", str(folder)]) == 1
    out = capsys.readouterr()
    assert "momentum_24h" in out.out and "scaled_1" in out.out and "enabled" in out.out
    assert "bad_syntax.py: syntax error" in out.err


def test_a_stored_view_holds_the_universe_only(stored: str, tmp_path: Path) -> None:
    """The trading view reads only the universe's rows: other symbols could never get a weight anyway."""
    paths = DataPaths(tmp_path / "data")
    window = parse_label(stored)
    every = AlphaDataView.from_storage(paths, window, 2, universe_version=None)
    chosen = sorted(every.universe)[::3]
    universe = paths.universe_file(format_day(window), "v2")
    universe.parent.mkdir(parents=True)
    universe.write_text("symbol\n" + "".join(f"{to_exchange(s)}\n" for s in chosen))
    view = AlphaDataView.from_storage(paths, window, 2, universe_version="v2")
    assert list(view.universe) == chosen
    for panel in (view.bars_panel, view.tran_stats_panel, view.premium_index_panel, view.funding_panel):
        assert panel.height and sorted(panel["symbol"].unique()) == chosen
    assert view.bars_panel.equals(every.bars_panel.filter(every.bars_panel["symbol"].is_in(chosen)))
