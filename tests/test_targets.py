"""The target-position file as the contract between sizing and execution: exact round trip, clear errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from lsq.paths import DataPaths
from lsq.targets import TargetFileError, TargetPosition, latest_targets, read_targets, target_files, write_targets
from lsq.timelabels import WINDOW_MS, parse_label

D = Decimal


def test_round_trip_is_exact_and_carries_window_and_decision_prices(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    window = parse_label("2026-11-20-100")
    rows = [
        TargetPosition("BTCUSDT", D("-0.123"), D("-3690.000"), D("30000.1")),
        TargetPosition("ETHUSDT", D("0"), D("0"), D("2000")),
    ]
    path = write_targets(paths, "sim_alpha", window, D("100000.5"), rows)
    back = read_targets(path)
    assert back.account_id == "sim_alpha" and back.window_ms == window and back.window_end_ms == window + WINDOW_MS
    assert back.quantities() == {"BTCUSDT": D("-0.123"), "ETHUSDT": D("0")}
    assert back.decision_prices() == {"BTCUSDT": D("30000.1"), "ETHUSDT": D("2000")}
    assert back.capital == D("100000.5") and back.label == "2026-11-20-100"
    later = write_targets(paths, "sim_alpha", window + WINDOW_MS, D("1"), rows)
    write_targets(paths, "sim_beta", window + 2 * WINDOW_MS, D("1"), rows)
    assert target_files(paths, "sim_alpha") == [path, later] and latest_targets(paths, "sim_alpha") == later


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"account_id": "a", "timestamp": 300000}), "lacks 'positions'"),
        (
            json.dumps(
                {"account_id": "a", "timestamp": 300000, "positions": [{"symbol": "X", "target_position": "1e"}]}
            ),
            "X target_position is not a number",
        ),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "a_target_positions_20261120_000000.json"
    path.write_text(content)
    with pytest.raises(TargetFileError, match=message):
        read_targets(path)
    with pytest.raises(TargetFileError, match="cannot read"):
        read_targets(tmp_path / "missing.json")
