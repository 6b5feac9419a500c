"""Window sealing rules: evidence by trade time, by heartbeat, by ticker; gaps and unflushed data block sealing."""

from __future__ import annotations

import pytest

from collectors.sealing import (
    NEVER,
    SymbolSeal,
    advance_complete_before,
    marker_payload,
    sealed_through,
    ticker_confirms,
    window_sealed,
    windows_to_seal,
)
from lsq.timelabels import WINDOW_MS

T0 = 1_795_488_900_000  # 2026-11-24 02:55 UTC, a window start
E = T0 + WINDOW_MS  # its end
LAG = 2_000


def evidence(**kw: object) -> int:
    args: dict = {"last_time": NEVER, "heartbeat_ms": None, "lag_ms": LAG, "gaps_open": False, "verified": True}
    args.update(kw)
    return advance_complete_before(NEVER, **args)


def test_trade_at_window_end_seals_but_one_ms_before_does_not() -> None:
    assert not window_sealed(T0, sealed_through(evidence(last_time=E - 1), None))
    assert window_sealed(T0, sealed_through(evidence(last_time=E), None))


def test_quiet_symbol_sealed_by_heartbeat_only_after_the_lag() -> None:
    assert not window_sealed(T0, evidence(heartbeat_ms=E + LAG - 1))
    assert window_sealed(T0, evidence(heartbeat_ms=E + LAG))


def test_heartbeat_needs_a_verified_tail() -> None:
    assert not window_sealed(T0, evidence(heartbeat_ms=E + 60_000, verified=False))
    # trade-time evidence does not need it: contiguous ids prove completeness on their own
    assert window_sealed(T0, evidence(last_time=E + 5, verified=False))


def test_open_gap_freezes_evidence() -> None:
    seal = SymbolSeal(active_from=T0)
    seal.update(last_time=E - 10, heartbeat_ms=None, lag_ms=LAG, gaps_open=False, verified=True)
    seal.update(last_time=E + 500, heartbeat_ms=E + 9_000, lag_ms=LAG, gaps_open=True, verified=True)
    assert seal.complete_before == E - 10
    assert not window_sealed(T0, sealed_through(seal.complete_before, None))
    seal.update(last_time=E + 500, heartbeat_ms=E + 9_000, lag_ms=LAG, gaps_open=False, verified=True)
    assert seal.complete_before == E + 7_000


def test_evidence_is_monotone() -> None:
    seal = SymbolSeal(active_from=T0)
    seal.confirm(E + 100)
    seal.update(last_time=E - 1000, heartbeat_ms=None, lag_ms=LAG, gaps_open=False, verified=False)
    assert seal.complete_before == E + 100


def test_unflushed_trades_block_sealing() -> None:
    assert not window_sealed(T0, sealed_through(E + 1000, pending_min_time=E - 1))
    assert window_sealed(T0, sealed_through(E + 1000, pending_min_time=E))


def test_ticker_confirms() -> None:
    assert ticker_confirms(None, None)  # the symbol never traded
    assert ticker_confirms(100, 100)
    assert not ticker_confirms(101, 100)
    assert not ticker_confirms(5, None)


def test_windows_seal_in_order_and_only_when_all_symbols_are_complete() -> None:
    active = {"BTCUSDT": T0, "ETHUSDT": T0}
    sealed = {"BTCUSDT": E + 3 * WINDOW_MS, "ETHUSDT": E + WINDOW_MS + 1}
    out = windows_to_seal(T0, sealed, active, server_time_ms=E + 10 * WINDOW_MS, lag_ms=LAG)
    assert out == [(T0, ["BTCUSDT", "ETHUSDT"]), (T0 + WINDOW_MS, ["BTCUSDT", "ETHUSDT"])]
    sealed["ETHUSDT"] = E - 1
    assert windows_to_seal(T0, sealed, active, server_time_ms=E + 10 * WINDOW_MS, lag_ms=LAG) == []


def test_symbol_joins_markers_from_its_first_window() -> None:
    active = {"BTCUSDT": T0, "NEWUSDT": T0 + WINDOW_MS}
    sealed = {"BTCUSDT": E + WINDOW_MS, "NEWUSDT": NEVER}
    out = windows_to_seal(T0, sealed, active, server_time_ms=E + WINDOW_MS, lag_ms=LAG)
    assert out == [(T0, ["BTCUSDT"])]


def test_window_without_symbols_seals_on_server_time() -> None:
    assert windows_to_seal(T0, {}, {}, server_time_ms=E + LAG - 1, lag_ms=LAG) == []
    assert windows_to_seal(T0, {}, {}, server_time_ms=E + LAG, lag_ms=LAG) == [(T0, [])]


def test_window_start_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="5-minute boundary"):
        windows_to_seal(T0 + 1, {}, {}, server_time_ms=E, lag_ms=LAG)


def test_marker_payload() -> None:
    body = marker_payload(T0, ["BTCUSDT"], 42, E + 700)
    assert body == {
        "window_start": T0,
        "window_end": E,
        "partition_key": "2026-11-24-02:55",
        "symbols": ["BTCUSDT"],
        "rows": 42,
        "sealed_at": E + 700,
    }
