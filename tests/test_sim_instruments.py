"""The simulator's instrument table: rows parse to exact decimals, and a bad cell is named by line and column."""

from __future__ import annotations

from decimal import Decimal
from importlib.resources import files

import pytest

from simulator.instruments import parse_instruments

TABLE = files("simulator").joinpath("instruments.csv").read_text()
HEADER, BTC = TABLE.splitlines()[:2]


def test_a_row_parses_to_exact_decimals_and_ints() -> None:
    (btc,) = parse_instruments(f"{HEADER}\n{BTC}\n")
    assert (btc.symbol, btc.tick_size, btc.step_size, btc.price_precision) == (
        "BTCUSDT",
        Decimal("0.01"),
        Decimal("0.001"),
        2,
    )


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "abc", ""])
def test_a_non_finite_or_unreadable_decimal_is_named(bad: str) -> None:
    row = BTC.replace(",0.01,", f",{bad},", 1)  # the tick size
    with pytest.raises(ValueError, match=f"table.csv line 2: bad tick_size '{bad}'"):
        parse_instruments(f"{HEADER}\n{row}\n", source="table.csv")
