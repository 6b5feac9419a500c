"""The generated market: deterministic aggTrades for any symbol and time, without storing anything.

Each (symbol, UTC day) is generated whole from numpy Generators seeded by (seed, symbol, day), so the same seed
yields the same trades whatever order or range they are asked in, and REST history, klines, bulk files and the live
stream agree by construction. The price is a correlated log random walk (a common factor plus idiosyncratic noise,
mean-reverting slowly around the reference price) fixed at daily closes from one vectorised draw per symbol, with a
Brownian bridge inside each day so any day is computable alone. Daily trade counts come from the same per-symbol
draw, so aggTrade and trade ids are contiguous from genesis without generating earlier days.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np

from lsq.timelabels import DAY_MS, MINUTE_MS, parse_day
from simulator.instruments import Instrument, all_instruments, select_instruments
from simulator.market.base import MarketBase, smooth_noise
from simulator.market.blocks import MINUTES, CompactDay, LRUCache, NoTradesError, TradeBlock, symbol_key

GENESIS_MS = parse_day("2026-01-01")  # first simulated trade; history starts here for every listed symbol
HORIZON_DAYS = 4096  # days after genesis the daily layer covers (to 2037)
_GENESIS_DAY = GENESIS_MS // DAY_MS  # seeds use days since the epoch, never negative


def _ar1_path(shocks: np.ndarray, phi: float, chunk: int = 128) -> np.ndarray:
    """y[0] = 0, y[d] = phi * y[d-1] + shocks[d-1]: closed form per chunk (phi**-chunk stays finite), vectorised."""
    out = np.zeros(len(shocks) + 1)
    k = np.arange(1, chunk + 1, dtype=np.float64)
    grow, shrink = phi**-k, phi**k
    level = 0.0
    for lo in range(0, len(shocks), chunk):
        piece = shocks[lo : lo + chunk]
        n = len(piece)
        out[lo + 1 : lo + 1 + n] = shrink[:n] * (level + np.cumsum(piece * grow[:n]))
        level = float(out[lo + n])
    return out


# ---------------------------------------------------------------------------------------------------------------
# The generated market


@dataclass(frozen=True)
class _SymbolModel:
    """Per-symbol constants and the daily layer (one vectorised draw over the whole horizon)."""

    key: int
    base_rate: float  # aggTrades per second on an average day
    daily_vol: float
    beta: float  # loading on the common factor
    half_spread_bps: float
    notional_scale: float  # USDT, Pareto scale of a trade's notional
    pareto_alpha: float
    log_open: np.ndarray  # log price at the start of each day (len HORIZON_DAYS + 1)
    n_agg: np.ndarray  # aggTrades per day, before listing adjustments
    n_extra: np.ndarray  # trades beyond one per aggTrade, per day
    agg_offset: int
    trade_offset: int


class Market(MarketBase):
    """The deterministic simulated market (see the module docstring)."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        seed: int,
        rate_multiplier: float = 1.0,
        block_cache_size: int | None = None,
    ) -> None:
        """Trade days are cached in two tiers: the recent ones (the latest day asked for and the one before, for
        every symbol: what the stream, 24 h tickers and the last day's backfill read) and a few older ones
        (`block_cache_size`, for history reads), so a walk over months of history never evicts the live days."""
        instruments = list(instruments)
        untradable = [i.symbol for i in instruments if not i.tradable]
        if untradable:
            raise ValueError(f"Market trades USDT perpetuals only; not tradable: {untradable}")
        if not rate_multiplier > 0:
            raise ValueError(f"rate_multiplier must be > 0, got {rate_multiplier}")
        super().__init__(instruments, seed)
        self.rate_multiplier = float(rate_multiplier)
        self._models: dict[str, _SymbolModel] = {}
        self._ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._recent_days = LRUCache(3 * len(instruments) + 8)
        self._old_days = LRUCache(block_cache_size or 4)
        self._latest_day = GENESIS_MS
        self._raw_cache = LRUCache(1)
        self._intraday_cache = LRUCache(4 * len(instruments) + 64)
        self._lock = threading.Lock()
        self._common = self._common_daily()

    # -- model ------------------------------------------------------------------------------------------------
    def _common_daily(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, 1]).standard_normal(HORIZON_DAYS)

    def _model(self, symbol: str) -> _SymbolModel:
        model = self._models.get(symbol)
        if model is None:
            model = self._build_model(self.instrument(symbol))
            self._models[symbol] = model
        return model

    def _build_model(self, inst: Instrument) -> _SymbolModel:
        key = symbol_key(inst.symbol)
        rng = np.random.default_rng([self.seed, key, 1])
        rank = _activity_rank(inst.symbol)
        base_rate = float(np.clip(4.0 * np.exp(-rank / 8) * rng.lognormal(0, 0.25), 0.5, 8.0))
        daily_vol = 0.025 if rank == 0 else 0.035 if rank == 1 else float(rng.uniform(0.03, 0.08))
        beta = 0.9 if rank == 0 else float(rng.uniform(0.55, 0.85))
        shocks = daily_vol * (beta * self._common + np.sqrt(1 - beta**2) * rng.standard_normal(HORIZON_DAYS))
        log_open = float(np.log(float(inst.ref_price))) + _ar1_path(shocks, 0.99)
        activity = _ar1_path(rng.normal(0, 0.35 * np.sqrt(1 - 0.8**2), HORIZON_DAYS), 0.8)[1:]
        mean_count = base_rate * 86_400 * self.rate_multiplier
        n_agg = np.maximum(1, np.rint(mean_count * np.exp(activity - 0.35**2 / 2))).astype(np.int64)
        n_extra = rng.poisson(n_agg * rng.uniform(0.3, 1.5)).astype(np.int64)
        agg_offset = int(rng.integers(10_000_000, 2_000_000_000))
        return _SymbolModel(
            key=key,
            base_rate=base_rate,
            daily_vol=daily_vol,
            beta=beta,
            half_spread_bps=float(rng.uniform(0.3, 2.0)),
            notional_scale=float(rng.uniform(20, 150)),
            pareto_alpha=float(rng.uniform(1.2, 1.6)),
            log_open=log_open,
            n_agg=n_agg,
            n_extra=n_extra,
            agg_offset=agg_offset,
            trade_offset=int(agg_offset * rng.uniform(1.5, 3.0)),
        )

    def first_trade_ms(self, symbol: str) -> int:
        """Listing (onboardDate) or genesis, whichever is later."""
        return max(self.instrument(symbol).onboard_date, GENESIS_MS)

    def _day_index(self, day_ms: int) -> int:
        index = (day_ms - GENESIS_MS) // DAY_MS
        if index >= HORIZON_DAYS:
            raise ValueError(f"{day_ms} is beyond the simulation horizon ({HORIZON_DAYS} days after genesis)")
        return index

    def _intraday(self, symbol: str, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(log price at each minute boundary [1441], activity weights [1440], taker-buy probability [1440],
        per-minute volatility [1440]) of day index `day`."""

        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            m = self._model(symbol)

            def noise(d: int, tag: int) -> np.ndarray:
                return np.random.default_rng([self.seed, m.key, _GENESIS_DAY + d, tag]).standard_normal(MINUTES)

            slow = smooth_noise(noise(day - 1, 2), noise(day, 2), 90.0)
            fast = smooth_noise(noise(day - 1, 3), noise(day, 3), 4.0)
            minute = np.arange(MINUTES)
            diurnal = 0.3 * np.cos(2 * np.pi * (minute / MINUTES - 14 / 24))
            weights = np.exp(0.6 * slow + 0.5 * fast + diurnal)
            weights /= weights.sum()
            vol = m.daily_vol * np.sqrt(weights)
            common = np.random.default_rng([self.seed, 0, _GENESIS_DAY + day, 4]).standard_normal(MINUTES)
            steps = vol * (m.beta * common + np.sqrt(1 - m.beta**2) * noise(day, 5))
            path = m.log_open[day] + np.concatenate([[0.0], np.cumsum(steps)])
            path -= np.linspace(0.0, 1.0, MINUTES + 1) * (path[-1] - m.log_open[day + 1])
            drift = smooth_noise(noise(day - 1, 6), noise(day, 6), 240.0)
            buy_p = 0.5 + 0.1 * np.tanh(drift) + 0.15 * np.tanh(steps / np.maximum(vol, 1e-12))
            return path, weights, buy_p, vol

        return self._intraday_cache.get((symbol, day), make)

    def _mid_log(self, symbol: str, now_ms: int) -> float:
        if now_ms < GENESIS_MS:
            raise NoTradesError(f"{symbol} has no price before genesis ({GENESIS_MS})")
        day_ms = now_ms - now_ms % DAY_MS
        path, *_ = self._intraday(symbol, self._day_index(day_ms))
        pos = (now_ms - day_ms) / MINUTE_MS
        i = int(pos)
        return float(path[i] + (pos - i) * (path[i + 1] - path[i]))

    def _raw_day(self, symbol: str, day_ms: int) -> tuple[np.ndarray, ...]:
        """(time, price ticks, qty steps, buyer_maker, trades per aggTrade) of a whole day; no ids yet."""

        def make() -> tuple[np.ndarray, ...]:
            inst = self.instrument(symbol)
            m = self._model(symbol)
            day = self._day_index(day_ms)
            first = self.first_trade_ms(symbol)
            if day < 0 or day_ms + DAY_MS <= first:
                z = np.zeros(0, dtype=np.int64)
                return z, z, z, np.zeros(0, dtype=bool), z
            path, weights, buy_p, vol = self._intraday(symbol, day)
            rng = np.random.default_rng([self.seed, m.key, day, 10])
            n = int(m.n_agg[day])
            per_minute = rng.multinomial(n, weights)
            offset = np.repeat(np.arange(MINUTES, dtype=np.int32) * np.int32(MINUTE_MS), per_minute)
            offset += rng.integers(0, MINUTE_MS, n, dtype=np.int32)
            offset.sort()
            minute = offset // MINUTE_MS
            frac = (offset - minute * MINUTE_MS) / MINUTE_MS
            log_mid = path[minute] + frac * (path[minute + 1] - path[minute])
            log_mid += 0.3 * vol[minute] * rng.standard_normal(n, dtype=np.float32)
            buy = rng.random(n, dtype=np.float32) < buy_p[minute]
            tick = float(inst.tick_size)
            mid = np.exp(log_mid) / tick
            half = np.maximum(0.5, mid * m.half_spread_bps * 1e-4)
            price = np.where(buy, np.ceil(mid + half), np.floor(mid - half)).astype(np.int64)
            price = _separate_same_price(offset, price, buy)
            np.maximum(price, 1, out=price)
            notional = m.notional_scale * np.exp(rng.standard_exponential(n, dtype=np.float32) / m.pareto_alpha)
            steps = np.floor(np.minimum(notional, 3e6) / (price * tick * float(inst.step_size))).astype(np.int64)
            np.clip(steps, inst.min_qty_steps, inst.max_qty_steps, out=steps)
            extra = int(m.n_extra[day])
            weight = np.cumsum(np.sqrt(steps, dtype=np.float64))
            spacing = np.cumsum(rng.standard_exponential(extra + 1))  # sorted uniforms: cache-friendly search
            hits = np.searchsorted(weight, spacing[:-1] * (weight[-1] / spacing[-1]), side="right")
            mult = 1 + np.bincount(np.minimum(hits, n - 1), minlength=n).astype(np.int64)
            time = day_ms + offset.astype(np.int64)
            if day_ms <= first:
                keep = int(np.searchsorted(time, first, side="left"))
                time, price, steps, buy, mult = time[keep:], price[keep:], steps[keep:], buy[keep:], mult[keep:]
                if len(time):
                    time[0] = first
            return time, price, steps, ~buy, mult

        return self._raw_cache.get((symbol, day_ms), make)

    def _id_bases(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """Per day index: the first aggTrade id and the first trade id of that day (prefix sums from genesis)."""
        bases = self._ids.get(symbol)
        if bases is not None:
            return bases
        m = self._model(symbol)
        first = self.first_trade_ms(symbol)
        listing_day = (first - first % DAY_MS - GENESIS_MS) // DAY_MS
        n_agg = m.n_agg.copy()
        n_trades = m.n_agg + m.n_extra
        if listing_day > 0:
            n_agg[:listing_day] = 0
            n_trades[:listing_day] = 0
        if listing_day >= 0 and first > first - first % DAY_MS:
            time, *_, mult = self._raw_day(symbol, first - first % DAY_MS)
            n_agg[listing_day] = len(time)
            n_trades[listing_day] = int(mult.sum())
        agg = m.agg_offset + np.concatenate([[0], np.cumsum(n_agg)])
        trade = m.trade_offset + np.concatenate([[0], np.cumsum(n_trades)])
        self._ids[symbol] = (agg, trade)
        return agg, trade

    def _day_block(self, symbol: str, day_ms: int) -> CompactDay:
        def make() -> CompactDay:
            inst = self.instrument(symbol)
            time, price, steps, maker, mult = self._raw_day(symbol, day_ms)
            day = self._day_index(day_ms)
            if not len(time):
                return CompactDay(TradeBlock.empty(inst), day_ms)
            agg_base, trade_base = self._id_bases(symbol)
            last = trade_base[day] + np.cumsum(mult) - 1
            agg = agg_base[day] + np.arange(len(time), dtype=np.int64)
            return CompactDay(TradeBlock(symbol, inst, agg, price, steps, last - mult + 1, last, time, maker), day_ms)

        with self._lock:
            self._latest_day = max(self._latest_day, day_ms)
            recent = day_ms >= self._latest_day - DAY_MS
        return (self._recent_days if recent else self._old_days).get((symbol, day_ms), make)

    # -- ids --------------------------------------------------------------------------------------------------
    def first_id_at(self, symbol: str, ms: int) -> int:
        """The aggTrade id of the first trade at or after `ms` (the id a stream starting at `ms` begins with)."""
        first = self.first_trade_ms(symbol)
        ms = max(int(ms), first)
        day_ms = ms - ms % DAY_MS
        source = self._day_block(symbol, day_ms)
        i = int(source.search_time(ms, side="left"))
        if i < len(source):
            return source.agg_id_at(i)
        agg_base, _ = self._id_bases(symbol)
        return int(agg_base[self._day_index(day_ms) + 1])

    def trades_from_id(self, symbol: str, from_id: int, limit: int, end_ms: int | None = None) -> TradeBlock:
        """Up to `limit` aggTrades with a >= from_id (and T <= end_ms when given), in id order."""
        inst = self.instrument(symbol)
        agg_base, _ = self._id_bases(symbol)
        from_id = max(int(from_id), int(agg_base[0]))
        first = self.first_trade_ms(symbol)
        day = int(np.searchsorted(agg_base, from_id, side="right")) - 1
        parts: list[TradeBlock] = []
        remaining = int(limit)
        while remaining > 0 and day < HORIZON_DAYS:
            day_ms = GENESIS_MS + day * DAY_MS
            if end_ms is not None and day_ms > end_ms:
                break
            if day_ms + DAY_MS > first:
                source = self._day_block(symbol, day_ms)
                lo = max(0, from_id - int(agg_base[day]))
                piece = source.rows(lo, lo + remaining)
                if end_ms is not None:
                    piece = piece[: int(np.searchsorted(piece.time_ms, end_ms, side="right"))]
                    if len(piece) < min(remaining, len(source) - lo):
                        parts.append(piece)
                        break
                parts.append(piece)
                remaining -= len(piece)
            day += 1
        return TradeBlock.concat(inst, parts)


def _separate_same_price(offset: np.ndarray, price: np.ndarray, buy: np.ndarray) -> np.ndarray:
    """Binance merges same-price, same-side fills within 100 ms into one aggTrade, so neighbours like that cannot
    both exist: push the later one a tick further in the taker's direction (as a sweep through the book would)."""
    direction = np.where(buy, 1, -1)
    for _ in range(4):
        clash = np.zeros(len(price), dtype=bool)
        clash[1:] = (price[1:] == price[:-1]) & (buy[1:] == buy[:-1]) & (offset[1:] - offset[:-1] < 100)
        if not clash.any():
            break
        price = price + np.where(clash, direction, 0)
    return price


@cache
def _activity_order() -> dict[str, int]:
    tradable = [i for i in all_instruments() if i.tradable]
    return {inst.symbol: n for n, inst in enumerate(select_instruments(len(tradable)))}


def _activity_rank(symbol: str) -> int:
    """Position among the tradable symbols (BTC, ETH first): busier symbols trade more, independent of K."""
    order = _activity_order()
    return order.get(symbol, len(order))
