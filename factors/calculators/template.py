"""Template for a new alpha factor. Copy this file to factors/calculators/<your_factor>.py and edit.

This file itself is never loaded as a factor (discovery skips template.py), so it can export an example.

Rules of the game
- `name` is unique: lowercase letters, digits and `_`. It names the Dagster asset `factor_<name>` and the keys in
  `strategy.calculators.enabled` / `strategy.calculators.weights`.
- `run(view)` returns weights per strategy symbol (`btc-usdt`): a dict, or a Polars frame [symbol, weight]. Only the
  sign and relative size matter: the engine scales each factor to Σ|w| = 1, drops NaN/inf and symbols outside the
  universe, then combines the factors with their configured weights.
- The view holds the trailing `strategy.history_days` of data ending with the sealed window: nothing later exists.
- Don't modify what the view hands you; if your code must (in-place writes), set `mutates_inputs = True`.
- Work on the whole panel at once (1): it is one vectorised query over every symbol, typically 10-100x faster
  than looping over symbols (2). The engine runs 20 factors on 300 symbols x 30 days in well under a second only if
  factors are written this way.

Try it alone: `lsq factor run my_factor_name --at 2026-11-20-100` prints its weights and timing.
"""

from __future__ import annotations

import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.data_view import AlphaDataView

LOOKBACK_WINDOWS = 288  # 24 h of 5-minute windows


class MyFactor(AlphaCalculatorBase):
    name = "my_factor_name"

    def run(self, view: AlphaDataView) -> pl.DataFrame:
        # (1) Panel form, the fast way: one expression over all symbols.
        # view.recent("bars", n) is the last n windows of view.bars_panel (all symbols, sorted by symbol, open_time).
        # Other panels: view.tran_stats_panel (buy/sell volume, dolvol, trade counts per size tier 1..4),
        # view.premium_index_panel, view.funding_panel (funding_time, funding_rate).
        bars = view.recent("bars", LOOKBACK_WINDOWS)
        scores = bars.group_by("symbol").agg(
            (pl.col("buydolvol").sum() / pl.col("dolvol").sum()).alias("buy_share"),
        )
        # Long the strongest taker buying, short the weakest: demeaned cross-sectional rank.
        rank = pl.col("buy_share").rank("average")
        return scores.filter(pl.col("buy_share").is_finite()).select("symbol", (rank - rank.mean()).alias("weight"))

    def run_per_symbol(self, view: AlphaDataView) -> dict[str, float]:
        # (2) Per-symbol form: simpler to read, slower. Same result as run() above.
        # view.get_bar(symbol, tail=N) / view.get_tran_stats(symbol, tail=N): one symbol, oldest row first.
        # view.get_bar_between('2026-11-20-001', '2026-11-20-288', mode='1h'): all symbols between two labels.
        shares = {}
        for symbol in view.iter_symbols():
            bars = view.get_bar(symbol, tail=LOOKBACK_WINDOWS)
            bars = bars.filter(pl.col("open_time") >= view.end_ms - LOOKBACK_WINDOWS * 5 * 60_000)
            dolvol = float(bars["dolvol"].sum())
            if dolvol > 0:
                shares[symbol] = float(bars["buydolvol"].sum()) / dolvol
        if not shares:
            return {}
        ranks = pl.Series(list(shares.values())).rank("average")
        return dict(zip(shares, (ranks - ranks.mean()).to_list(), strict=True))


CALCULATOR_INSTANCE = MyFactor()
