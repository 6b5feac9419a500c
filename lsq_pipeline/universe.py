"""The trading universe of a UTC day, from the exchange's own metadata.

v1: every TRADING, USDT-margined PERPETUAL in exchangeInfo with its trading filters.
v2: v1 narrowed to symbols listed at least `min_listing_days` before the day, then the top `top_n` by 24h quote volume.
Files: DataPaths.universe_file(day, version). A new day gets new files; older days and versions stay readable.
The universe of day D is built at `data.universe_refresh_time` in `data.timezone` on the day before.
"""

import io
from collections.abc import Iterable
from datetime import UTC, timedelta
from typing import Any

import dagster as dg
import polars as pl

from lsq.config import UniverseSettings
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import DAY_MS, now_ms, parse_day
from lsq_pipeline.partitions import UNIVERSE_DAYS
from lsq_pipeline.resources import LsqResource

VERSIONS = ("v1", "v2")

UNIVERSE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "base_asset": pl.String(),
    "tick_size": pl.Decimal(38, 8),
    "step_size": pl.Decimal(38, 8),
    "min_qty": pl.Decimal(38, 8),
    "min_notional": pl.Decimal(38, 8),
    "price_precision": pl.Int32(),
    "quantity_precision": pl.Int32(),
    "onboard_date": pl.Int64(),
}
V2_EXTRA: dict[str, pl.DataType] = {"quote_volume_24h": pl.Float64()}


def _filter_value(info: dict[str, Any], filter_type: str, field: str) -> str:
    for f in info.get("filters", []):
        if f.get("filterType") == filter_type:
            return str(f[field])
    raise ValueError(f"{info.get('symbol')}: exchangeInfo has no {filter_type}.{field}")


def universe_v1(exchange_info: dict[str, Any]) -> pl.DataFrame:
    """Every TRADING USDT-margined perpetual with tick/step sizes, min qty/notional, precisions and onboard date."""
    rows = [
        {
            "symbol": s["symbol"],
            "base_asset": s["baseAsset"],
            "tick_size": _filter_value(s, "PRICE_FILTER", "tickSize"),
            "step_size": _filter_value(s, "LOT_SIZE", "stepSize"),
            "min_qty": _filter_value(s, "LOT_SIZE", "minQty"),
            "min_notional": _filter_value(s, "MIN_NOTIONAL", "notional"),
            "price_precision": s["pricePrecision"],
            "quantity_precision": s["quantityPrecision"],
            "onboard_date": s["onboardDate"],
        }
        for s in exchange_info.get("symbols", [])
        if s.get("status") == "TRADING"
        and s.get("contractType") == "PERPETUAL"
        and s.get("quoteAsset") == "USDT"
        and s.get("marginAsset", "USDT") == "USDT"
    ]
    strings = {c: pl.String() for c in UNIVERSE_SCHEMA}
    frame = pl.DataFrame(
        rows, schema={**strings, "price_precision": pl.Int64, "quantity_precision": pl.Int64, "onboard_date": pl.Int64}
    )
    return frame.select(pl.col(c).cast(t) for c, t in UNIVERSE_SCHEMA.items()).sort("symbol")


def universe_v2(
    v1: pl.DataFrame, tickers: Iterable[dict[str, Any]], day_ms: int, rules: UniverseSettings
) -> pl.DataFrame:
    """v1 symbols onboarded ≥ `min_listing_days` before `day_ms`, top `top_n` by 24h quote volume (ties: by name)."""
    volumes = pl.DataFrame(
        [{"symbol": t["symbol"], "quote_volume_24h": float(t["quoteVolume"])} for t in tickers],
        schema={"symbol": pl.String, "quote_volume_24h": pl.Float64},
    )
    cutoff = day_ms - rules.min_listing_days * DAY_MS
    return (
        v1.filter(pl.col("onboard_date") <= cutoff)
        .join(volumes, on="symbol", how="left")
        .with_columns(pl.col("quote_volume_24h").fill_null(0.0))
        .sort(["quote_volume_24h", "symbol"], descending=[True, False])
        .head(rules.top_n)
        .sort("symbol")
    )


def write_universe(paths: DataPaths, day: str, version: str, frame: pl.DataFrame) -> None:
    parse_day(day)
    if version not in VERSIONS:
        raise ValueError(f"unknown universe version {version!r}; expected one of {VERSIONS}")
    buf = io.StringIO()
    frame.write_csv(buf)
    atomic_write_text(paths.universe_file(day, version), buf.getvalue())


def read_universe(paths: DataPaths, day: str, version: str = "v1") -> pl.DataFrame:
    """The stored universe of `day`; FileNotFoundError names the missing file."""
    if version not in VERSIONS:
        raise ValueError(f"unknown universe version {version!r}; expected one of {VERSIONS}")
    path = paths.universe_file(day, version)
    if not path.exists():
        raise FileNotFoundError(f"no {version} universe for {day}: {path} does not exist")
    schema = {**UNIVERSE_SCHEMA, **(V2_EXTRA if version == "v2" else {})}
    return pl.read_csv(path, schema_overrides=schema)


def universe_days(paths: DataPaths, version: str = "v1") -> list[str]:
    """Days that have a stored universe of `version`, ascending."""
    root = paths.root / "universe"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if paths.universe_file(p.name, version).exists())


def universe_day_for(paths: DataPaths, day_ms: int, version: str = "v1") -> str | None:
    """The universe in force on the UTC day of `day_ms`: that day's, else the latest earlier one, else None."""
    days = [d for d in universe_days(paths, version) if parse_day(d) <= day_ms]
    return days[-1] if days else None


def universe_symbols(paths: DataPaths, day_ms: int, version: str = "v1") -> list[str]:
    """Binance symbols of the universe in force on the day of `day_ms` (empty when none is stored yet)."""
    day = universe_day_for(paths, day_ms, version)
    return [] if day is None else read_universe(paths, day, version)["symbol"].to_list()


def day_volumes(client: Any, symbols: Iterable[str], day_ms: int) -> list[dict[str, Any]]:
    """Quote volume of each symbol over the complete UTC day before `day_ms`, from its 1d kline: what was known when
    that day's universe was due, so a universe built later (a backfill) carries no look-ahead."""
    rows = []
    for symbol in symbols:
        klines = client.futures_klines(symbol=symbol, interval="1d", startTime=day_ms - DAY_MS, limit=1)
        volume = klines[0][7] if klines and int(klines[0][0]) == day_ms - DAY_MS else "0"
        rows.append({"symbol": symbol, "quoteVolume": volume})
    return rows


def build_universe(lsq: LsqResource, day: str, now: int | None = None) -> dict[str, pl.DataFrame]:
    """Build both versions for `day` and store them: v1 from exchangeInfo; v2 ranked by the live 24h tickers when
    building ahead (the 23:55 refresh for tomorrow), else by the previous UTC day's volume (point in time)."""
    client = lsq.rest()
    day_ms = parse_day(day)
    v1 = universe_v1(client.futures_exchange_info())
    ahead = day_ms > (now_ms() if now is None else now)
    volumes = client.futures_ticker() if ahead else day_volumes(client, v1["symbol"].to_list(), day_ms)
    v2 = universe_v2(v1, volumes, day_ms, lsq.settings.data.universe)
    for version, frame in (("v1", v1), ("v2", v2)):
        write_universe(lsq.paths, day, version, frame)
    return {"v1": v1, "v2": v2}


@dg.asset(
    partitions_def=UNIVERSE_DAYS,
    group_name="reference",
    kinds={"csv"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Trading universe of a UTC day: v1 all USDT perpetuals, v2 top N by volume with listing age.",
)
def universe(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
    """One day, or every day of a backfill's range in one run (metadata then describes the last day)."""
    days = context.partition_keys
    built = {day: build_universe(lsq, day) for day in days}
    last = built[days[-1]]
    return dg.MaterializeResult(
        metadata={
            "days": len(days),
            "v1_symbols": len(last["v1"]),
            "v2_symbols": len(last["v2"]),
            "v2": ", ".join(last["v2"]["symbol"].to_list()),
            "path": dg.MetadataValue.path(str(lsq.paths.universe_file(days[-1], "v1").parent.parent)),
        }
    )


universe_job = dg.define_asset_job("universe_job", selection=[universe])


def universe_schedule_for(refresh_time: str, timezone: str) -> dg.ScheduleDefinition:
    """Builds tomorrow's universe (tomorrow in `timezone`) at `refresh_time` local time every day."""
    hour, minute = refresh_time.split(":")

    @dg.schedule(
        name="universe_schedule",
        job=universe_job,
        cron_schedule=f"{int(minute)} {int(hour)} * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # universes are per UTC day: "tomorrow" is the UTC day after the refresh, whatever the local zone
        day = (context.scheduled_execution_time.astimezone(UTC).date() + timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return _schedule
