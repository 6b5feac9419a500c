"""The factor stage in Dagster: one `factor_<name>` asset per calculator, the `alpha`, and `target_positions`.

All three are on the 5-minute partitions and run in the same window job as the window's bars. Lineage declares the
trailing `strategy.history_days` of bars_5m / tran_stats_5m / premium_index_5m and the window's day of funding_rates
and universe, but the data are read straight from storage: loading thousands of upstream partitions through an
IO manager is far too slow, and the view comes from the rolling panel (lsq.stores.factor_panel), memory-mapped and
extended by the new windows instead of re-read from parquet every run. `factor_assets(settings, five_minute)`
discovers the enabled calculators and declares the lineage of the configured `strategy.history_days`.

- `factors` (one step, `can_subset`): builds the view once and runs the selected calculators with the configured
  concurrency; each `factor_<name>` materialises with its status, timing and weights summary, and its check
  `succeeded` fails for a calculator that raised or timed out. Vectors and run records go to data/factors/.
- `alpha`: combines the stored vectors (weights, min_success_ratio, Σ|w| = 1) into data/alpha/.
- `target_positions`: sizes the alpha for every usable account and writes data/positions/*.json; one account's
  failure is reported (metadata `accounts`, check `accounts_sized`: WARN), the step fails only when no account
  could be sized (ERROR).
Every factor and alpha materialisation carries the history the calculators saw (`history`); a short history (after a
fresh start) is logged once, by the factors step, naming the command that fills it (HistoryCoverage.note).
"""

import sys
import time
import warnings
from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl

from factors.calculator import AlphaCalculatorBase
from factors.data_view import AlphaDataView
from factors.discovery import Problem, discover
from factors.engine import (
    AlphaResult,
    AlphaRunError,
    CalculatorRun,
    HistoryCoverage,
    alpha_file,
    combine,
    factor_dir,
    load_runs,
    persist_alpha,
    persist_runs,
    run_calculators,
)
from factors.sizing import SizingError, SizingReport, latest_prices, write_target_positions
from lsq.config import Settings
from lsq.stores.panels import load_panel
from lsq.stores.universes import traded_version, universe_symbols
from lsq.timelabels import DAY_MS, WINDOW_MS, parse_partition_key
from lsq_pipeline.defs.market.keys import BARS_5M, FUNDING_RATES, PREMIUM_INDEX_5M, TRAN_STATS_5M
from lsq_pipeline.defs.universe.assets import UNIVERSE
from lsq_pipeline.resources import LsqResource

GROUP = "factors"
TOP_WEIGHTS = 10


def factor_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(f"factor_{name}")


def factor_deps() -> list[dg.AssetDep]:
    """Lineage of a factor window: the window's 5-minute panels and its day's daily assets.

    The calculators also read the trailing `strategy.history_days` of the panels from storage; that history is not
    declared partition by partition. Dagster resolves a trailing mapping of 5-minute partitions by stepping through
    its cron schedule window by window (8,640 steps per input for 30 days: 1-3 s before every factors step, on the
    window's critical path), and past 100 upstream partitions it ignores them for data versions anyway. What history
    a run actually saw is every factor's `history` metadata (factors.engine.HistoryCoverage)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # allow_nonexistent_upstream_partitions: before the start
        same_window = dg.TimeWindowPartitionMapping()
        same_day = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
    return [
        dg.AssetDep(BARS_5M, partition_mapping=same_window),
        dg.AssetDep(TRAN_STATS_5M, partition_mapping=same_window),
        dg.AssetDep(PREMIUM_INDEX_5M, partition_mapping=same_window),
        dg.AssetDep(FUNDING_RATES, partition_mapping=same_day),
        dg.AssetDep(UNIVERSE, partition_mapping=same_day),
    ]


def _weights_summary(weights: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    w = weights["weight"]
    top = weights.sort(pl.col("weight").abs(), descending=True).head(TOP_WEIGHTS)
    return {
        "symbols": dg.MetadataValue.int(weights.height),
        "long": dg.MetadataValue.int(int((w > 0).sum())),
        "short": dg.MetadataValue.int(int((w < 0).sum())),
        "gross": dg.MetadataValue.float(float(w.abs().sum())),
        "net": dg.MetadataValue.float(float(w.sum())),
        "top_weights": dg.MetadataValue.md(
            "| symbol | weight |\n|---|---|\n" + "\n".join(f"| {s} | {x:+.6f} |" for s, x in top.iter_rows())
        ),
    }


def _history_metadata(history: HistoryCoverage | None) -> dict[str, dg.MetadataValue]:
    if history is None:
        return {}
    meta: dict[str, dg.MetadataValue] = {"history": dg.MetadataValue.json(history.as_dict())}
    if history.short:
        meta["history_note"] = dg.MetadataValue.text(history_note(history))
    return meta


def history_note(history: HistoryCoverage) -> str:
    return history.note()


def _run_metadata(run: CalculatorRun, load_seconds: float, folder: str) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(run.status),
        "seconds": dg.MetadataValue.float(round(run.seconds, 6)),
        "view_load_seconds": dg.MetadataValue.float(round(load_seconds, 6)),
        "dropped": dg.MetadataValue.int(run.dropped),
        "path": dg.MetadataValue.path(folder),
        **_history_metadata(run.history),
    }
    if run.ok:
        meta.update(_weights_summary(run.weights))
    else:
        meta["error"] = dg.MetadataValue.text(run.error or run.status)
        meta["traceback"] = dg.MetadataValue.md(f"```\n{run.traceback or ''}\n```")
    return meta


def _describe(calc: AlphaCalculatorBase) -> str:
    """The calculator module's docstring (what a researcher wrote about the factor), else the class's."""
    module = sys.modules.get(type(calc).__module__)
    return ((module.__doc__ if module else None) or type(calc).__doc__ or calc.name).strip()


def _factors_asset(
    calculators: Sequence[AlphaCalculatorBase], history_days: int, five_minute: dg.TimeWindowPartitionsDefinition
) -> dg.AssetsDefinition:
    by_key = {factor_key(c.name): c for c in calculators}
    deps = factor_deps()

    @dg.multi_asset(
        name="factors",
        specs=[
            dg.AssetSpec(
                key,
                deps=deps,
                group_name=GROUP,
                kinds={"polars", "parquet"},
                description=_describe(calc),
            )
            for key, calc in by_key.items()
        ],
        check_specs=[
            # on the window's partitions, so the result lands on the window Dagster planned it for (else the
            # window reads "Skipped" and the result floats without a partition)
            dg.AssetCheckSpec(
                "succeeded",
                asset=key,
                description="The calculator returned weights in time.",
                partitions_def=five_minute,
            )
            for key in by_key
        ],
        partitions_def=five_minute,
        can_subset=True,
        description="Runs the selected calculators on one shared view of the trailing data.",
    )
    def factors_step(
        context: dg.AssetExecutionContext, lsq: LsqResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        window_ms = parse_partition_key(context.partition_key)
        settings = lsq.settings
        selected = [calc for key, calc in by_key.items() if key in context.selected_asset_keys]
        started = time.perf_counter()
        view = AlphaDataView.from_storage(
            lsq.paths, window_ms, settings.strategy.history_days, universe_version=traded_version(settings)
        )
        load_seconds = time.perf_counter() - started
        context.log.info(
            f"view of {view.label}: {len(view.universe)} symbols, {view.bars_panel.height} bar rows "
            f"({load_seconds:.2f} s); running {len(selected)} calculators ({settings.strategy.alpha.concurrency})"
        )
        # with paths: timeout streaks persist, and a calculator that keeps hanging sits out a cool-down
        runs = run_calculators(selected, view, settings.strategy.alpha, paths=lsq.paths)
        persist_runs(lsq.paths, window_ms, runs)
        history = next((r.history for r in runs if r.history is not None), None)
        if history is not None and history.short:
            context.log.warning(history_note(history))
        folder = str(factor_dir(lsq.paths, window_ms))
        checks = context.selected_asset_check_keys
        for run in runs:
            key = factor_key(run.name)
            if not run.ok:
                context.log.warning(f"calculator {run.name} {run.status}: {run.error}")
            yield dg.MaterializeResult(asset_key=key, metadata=_run_metadata(run, load_seconds, folder))
            if dg.AssetCheckKey(key, "succeeded") in checks:
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name="succeeded",
                    passed=run.ok,
                    metadata={"status": run.status, "error": run.error or ""},
                )

    return factors_step


def _alpha_metadata(result: AlphaResult, written: list[str]) -> dict[str, dg.MetadataValue]:
    return {
        **(_weights_summary(result.alpha) if result.alpha.height else {"symbols": dg.MetadataValue.int(0)}),
        "note": dg.MetadataValue.text(result.note or "ok"),
        "success_ratio": dg.MetadataValue.float(result.success_ratio),
        "calculators": dg.MetadataValue.json(
            {
                r.name: {"status": r.status, "weight": result.weights.get(r.name), "seconds": r.seconds}
                for r in result.runs
            }
        ),
        "failures": dg.MetadataValue.json(result.failures),
        "files": dg.MetadataValue.text("\n".join(written)),
        **_history_metadata(result.history),
    }


def _alpha_asset(
    names: Sequence[str], problems: Sequence[Problem], five_minute: dg.TimeWindowPartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        name="alpha",
        deps=[factor_key(n) for n in names],
        partitions_def=five_minute,
        group_name=GROUP,
        kinds={"polars", "parquet"},
        description="Weighted sum of the factor vectors (each scaled to Σ|w| = 1), normalised to Σ|w| = 1.",
    )
    def alpha(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        window_ms = parse_partition_key(context.partition_key)
        strategy = lsq.settings.strategy
        runs = load_runs(lsq.paths, window_ms, names)
        universe_names = sorted({s for r in runs for s in r.weights["symbol"].to_list()})
        try:
            result = combine(
                runs,
                universe_names,
                strategy.calculators.weights,
                window_ms,
                strategy.alpha.min_success_ratio,
                strategy.alpha.concurrency,
                max((r.seconds for r in runs), default=0.0),
            )
        except AlphaRunError as exc:
            raise dg.Failure(description=str(exc), metadata={"failures": exc.result.failures}) from None
        written = [str(p) for p in persist_alpha(lsq.paths, result)]
        if result.note:
            context.log.warning(result.note)
        for problem in problems:
            context.log.warning(f"calculator not loaded: {problem}")
        metadata = _alpha_metadata(result, written)
        metadata["discovery_problems"] = dg.MetadataValue.json([str(p) for p in problems])
        return dg.MaterializeResult(metadata=metadata)

    return alpha


def _accounts_metadata(report: SizingReport) -> dict[str, dg.MetadataValue]:
    """Per-account outcome ({status, path, reason}) and the written accounts' figures."""
    return {
        "accounts": dg.MetadataValue.json(
            {
                a: {"status": o.status, "path": str(o.path) if o.path else None, "reason": o.reason}
                for a, o in report.accounts.items()
            }
        ),
        "files": dg.MetadataValue.json([str(t.path) for t in report.written]),
        "gross_notional": dg.MetadataValue.json({t.account_id: float(t.gross_notional) for t in report.written}),
        "capital": dg.MetadataValue.json({t.account_id: float(t.capital) for t in report.written}),
        "positions": dg.MetadataValue.json(
            {t.account_id: sum(p.target_position != 0 for p in t.positions) for t in report.written}
        ),
        "skipped_accounts": dg.MetadataValue.json(report.skipped),
        "failed_accounts": dg.MetadataValue.json(report.failed),
    }


def accounts_check(report: SizingReport, none_sized: bool) -> dg.AssetCheckResult:
    """`accounts_sized`: WARN when some account failed, ERROR when none could be sized."""
    failed = report.failed
    return dg.AssetCheckResult(
        check_name=ACCOUNTS_CHECK,
        passed=not failed and not none_sized,
        severity=dg.AssetCheckSeverity.ERROR if none_sized else dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{a}: {r}" for a, r in sorted(failed.items())) or None,
        metadata={"written": len(report.written), "failed": len(failed), "skipped": len(report.skipped)},
    )


ACCOUNTS_CHECK = "accounts_sized"


def _target_positions_asset(five_minute: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["alpha", dg.AssetDep(UNIVERSE, partition_mapping=dg.TimeWindowPartitionMapping())],
        partitions_def=five_minute,
        group_name=GROUP,
        kinds={"json"},
        check_specs=[
            dg.AssetCheckSpec(
                ACCOUNTS_CHECK,
                asset="target_positions",
                description="Every account with credentials was sized (WARN: some failed; ERROR: none could be).",
                partitions_def=five_minute,
            )
        ],
        description="Signed target quantities per account: `data/positions/{account}_target_positions_{stamp}.json`.",
    )
    def target_positions(
        context: dg.AssetExecutionContext, lsq: LsqResource
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        window_ms = parse_partition_key(context.partition_key)
        paths, settings = lsq.paths, lsq.settings
        version = traded_version(settings)
        alpha = pl.read_parquet(alpha_file(paths, window_ms))
        symbols = universe_symbols(paths, window_ms, version)
        if not symbols:
            raise dg.Failure(description=f"no {version} universe stored for {context.partition_key}")
        bars = load_panel("bars", window_ms + WINDOW_MS - DAY_MS, window_ms + WINDOW_MS, paths=paths)
        try:
            report = write_target_positions(
                settings, paths, window_ms, dict(alpha.iter_rows()), latest_prices(bars), symbols
            )
        except SizingError as exc:
            yield accounts_check(exc.report, none_sized=True)
            raise dg.Failure(description=str(exc), metadata=_accounts_metadata(exc.report)) from None
        for account, reason in report.skipped.items():
            context.log.warning(f"account {account} skipped: {reason}")
        for account, reason in report.failed.items():
            context.log.warning(f"account {account} could not be sized: {reason}")
        yield dg.MaterializeResult(metadata=_accounts_metadata(report))
        yield accounts_check(report, none_sized=False)

    return target_positions


def build_factor_assets(
    calculators: Sequence[AlphaCalculatorBase],
    history_days: int,
    five_minute: dg.TimeWindowPartitionsDefinition,
    problems: Sequence[Problem] = (),
) -> list[dg.AssetsDefinition]:
    """The factor stage for `calculators` (tests pass calculators discovered from their own folder).

    `problems` (files that failed to load) are logged by every alpha run and listed in its metadata.
    """
    factors = [_factors_asset(calculators, history_days, five_minute)] if calculators else []
    return [
        *factors,
        _alpha_asset([c.name for c in calculators], problems, five_minute),
        _target_positions_asset(five_minute),
    ]


def factor_assets(settings: Settings, five_minute: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The configured factor stage: the enabled calculators, with the configured history as lineage."""
    strategy = settings.strategy
    calculators, problems = discover(enabled=strategy.calculators.enabled, weights=strategy.calculators.weights)
    return build_factor_assets(calculators, strategy.history_days, five_minute, problems)
