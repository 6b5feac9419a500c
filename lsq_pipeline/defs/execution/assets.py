"""The `executions` asset: one partition per trading account, each materialisation one rebalance of that account.

A run of `execution_job` (requested by `execution_sensor`, one per account and target window) calls
`executors.run.run_account`, exactly what `lsq execute` calls, with the staleness guard on: a target file older than
`execution.executor.max_target_age_seconds` is skipped and reported (status `stale`). The window comes from the run's
`lsq/target_window` tag; a materialisation launched by hand without it executes the account's latest target file.
The report's figures become numeric metadata (Dagster plots them per partition over time); a known error (live
not confirmed, a bad target file, an unknown account, the exchange failing the run) fails the step with one message.
"""

from pathlib import Path

import dagster as dg
from binance.exceptions import BinanceAPIException, BinanceRequestException
from requests import RequestException

from executors.run import ExecutionReport, run_account
from executors.safety import LiveNotConfirmed
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.paths import DataPaths
from lsq.targets import TargetFileError, positions_file
from lsq.timelabels import WINDOW_MS, label_of, parse_partition_key, parse_window
from lsq_pipeline.resources import LsqResource

GROUP = "execution"
EXECUTIONS = dg.AssetKey("executions")
# The enabled accounts of the configured mode, kept in step with the configuration by execution_sensor.
ACCOUNTS = dg.DynamicPartitionsDefinition(name="accounts")
ACCOUNT_TAG = "lsq/account"
# Not `lsq/window`: that tag key is limited to one run at a time in dagster.yaml (the window runs), so an execution
# run carrying it would queue behind, and block, the window job.
WINDOW_TAG = "lsq/target_window"
# Materialisation tags allow no ':' (a partition key has one): there the window goes by its label (2026-12-01-110).
LABEL_TAG = "lsq/target_label"
# Every report materialises (its status in the metadata); these are logged as info, the others (halted, stale,
# superseded, stopped, busy) as a warning with the report's notes.
QUIET = ("completed", "dry_run", "no_targets")
KNOWN_ERRORS = (LiveNotConfirmed, TargetFileError, ValueError)
EXCHANGE_ERRORS = (BinanceAPIException, BinanceRequestException, RequestException)


def window_targets(paths: DataPaths, account_id: str, window_key: str | None) -> Path | None:
    """The target file of the run's window (None without a window: the account's latest)."""
    if window_key is None:
        return None
    return positions_file(paths, account_id, parse_partition_key(window_key))


def execution_metadata(report: ExecutionReport) -> dict[str, dg.MetadataValue]:
    """The report as metadata: every scalar figure (numbers as numbers, so the UI plots them), the latencies from
    the window's end, and the per-symbol details as JSON."""
    meta: dict[str, dg.MetadataValue] = {}
    for key, value in report.metadata().items():
        if isinstance(value, str):
            meta[key] = dg.MetadataValue.text(value)
        elif isinstance(value, int):
            meta[key] = dg.MetadataValue.int(value)
        else:
            meta[key] = dg.MetadataValue.float(float(value))
    meta["dry_run"] = dg.MetadataValue.bool(report.dry_run)
    meta["executor_run_id"] = dg.MetadataValue.text(report.run_id)
    meta["seconds"] = dg.MetadataValue.float(round((report.finished_ms - report.started_ms) / 1000, 3))
    if report.target_file:
        meta["target_file"] = dg.MetadataValue.path(report.target_file)
    if report.window:
        window_end = parse_window(report.window) + WINDOW_MS
        meta["window_end"] = dg.MetadataValue.timestamp(window_end / 1000)
        meta["complete_after_window_end_s"] = dg.MetadataValue.float((report.finished_ms - window_end) / 1000)
        if report.first_ack_ms is not None:
            meta["first_ack_after_window_end_s"] = dg.MetadataValue.float((report.first_ack_ms - window_end) / 1000)
    if report.first_ack_ms is not None:
        meta["first_ack_ms"] = dg.MetadataValue.int(report.first_ack_ms)
    meta["finished_ms"] = dg.MetadataValue.int(report.finished_ms)
    meta["residual"] = dg.MetadataValue.json(report.residual)
    meta["skipped_symbols"] = dg.MetadataValue.json(report.skipped)
    meta["plan"] = dg.MetadataValue.json(report.plan)
    if report.orders:
        meta["dry_run_orders"] = dg.MetadataValue.json(report.orders)
    if report.foreign_orders:
        meta["foreign_orders"] = dg.MetadataValue.json(report.foreign_orders)
    meta["notes"] = dg.MetadataValue.text("\n".join(report.notes))
    return meta


def _missing(account_id: str, window_key: str, path: Path, clock: Clock) -> ExecutionReport:
    """The report of a window without a target file for this account (sizing skipped it): nothing to do."""
    now = clock.now_ms()
    report = ExecutionReport(account_id, "-", "no_targets", "-", False, started_ms=now, finished_ms=now)
    report.window = label_of(parse_partition_key(window_key))
    report.notes.append(f"no target file {path.name} for window {window_key}")
    return report


def executions_asset(clock: Clock = SYSTEM_CLOCK) -> dg.AssetsDefinition:
    """The per-account `executions` asset; `clock` drives the schedules' slices and the staleness guard."""

    @dg.asset(
        name=EXECUTIONS.path[0],
        partitions_def=ACCOUNTS,
        group_name=GROUP,
        # Lineage only: an account executes the newest window's targets; the data are read from data/positions/.
        deps=[dg.AssetDep("target_positions", partition_mapping=dg.LastPartitionMapping())],
        kinds={"binance"},
        description="One rebalance of the account toward its target window (orders, fills, fees, slippage, "
        "residual); journal in data/execution/{account}/.",
    )
    def executions(context: dg.AssetExecutionContext, lsq: LsqResource) -> dg.MaterializeResult:
        account = context.partition_key
        window_key = context.run.tags.get(WINDOW_TAG)
        settings = lsq.settings
        try:
            targets = window_targets(lsq.paths, account, window_key)
        except ValueError as exc:  # a run launched by hand with a mistyped tag
            raise dg.Failure(description=f"tag {WINDOW_TAG}: {exc}", allow_retries=False) from None

        def should_stop() -> bool:
            """A run being cancelled in Dagster stops at the next slice (its orders are journaled: safe)."""
            run = context.instance.get_run_by_id(context.run.run_id)
            return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)

        if window_key is not None and targets is not None and not targets.exists():
            report = _missing(account, window_key, targets, clock)
        else:
            try:
                report = run_account(settings, account, targets, clock, enforce_max_age=True, should_stop=should_stop)
            except KNOWN_ERRORS as exc:
                raise dg.Failure(
                    description=f"{account}: {exc}", metadata={"status": "failed"}, allow_retries=False
                ) from None
            except EXCHANGE_ERRORS as exc:
                raise dg.Failure(
                    description=f"{account}: the exchange failed the run ({type(exc).__name__}: {exc}); it is "
                    "journaled, so re-executing this run is safe",
                    metadata={"status": "failed"},
                    allow_retries=False,
                ) from None
        message = f"{account} window {report.window or window_key or 'latest'}: {report.status}"
        if report.status in QUIET:
            context.log.info(f"{message}, {report.orders_sent} orders, {report.filled_notional:.2f} USDT filled")
        else:
            context.log.warning(f"{message}: {'; '.join(report.notes)}")
        metadata = execution_metadata(report)
        if window_key:
            metadata["target_window"] = dg.MetadataValue.text(window_key)
        tags = {ACCOUNT_TAG: account, **({LABEL_TAG: report.window} if report.window else {})}
        return dg.MaterializeResult(metadata=metadata, tags=tags)

    return executions
