"""Verify a running (or just stopped) `lsq run` end to end against the simulator's own records (issue 11).

    python benchmarks/monitoring_check.py --config hour.yaml --data-dir DATA --dagster-home HOME \\
        [--poll poll.jsonl] [--start MS] [--end MS]

1. Dagster: account_state materializations per account and how many carry the plotted numbers (equity, drawdown,
   gross, net, deviation); check evaluations per check and outcome; runs per job and status.
2. Equity curve (data/monitoring/{account}/equity) against the simulator's equity: from GET /admin/equity when the
   simulator serves it (the exact answer the watcher received: must be equal), else from benchmarks/monitoring_poll.py
   samples (the nearest poll in time: wallet must be equal where no fill came between, equity differs by the mark's
   move between the two requests; the spread is reported).
3. The strategy report's fees and funding over [start, end) against the sum of GET /fapi/v1/income over the same
   range, fetched with the mock keys of the config: must be equal exactly.
4. Implementation shortfall for every executed window: every (window, symbol) with fills in the executor's journal
   (data/execution/{account}/journal.sqlite) has a report row with a decision-price shortfall.
Exits 1 when an exact check fails. The simulator must still run for 2 and 3 (the income is fetched from it).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from benchmarks.monitoring_poll import mock_accounts, signed_get  # noqa: E402
from lsq.paths import DataPaths  # noqa: E402
from lsq.timelabels import WINDOW_MS  # noqa: E402
from monitoring.report import account_report  # noqa: E402
from monitoring.store import AccountStore  # noqa: E402

PLOTTED = ("equity", "drawdown", "gross", "net", "deviation")
PAGE = 10_000  # Dagster's most event records per query


def dagster_counts(home: Path, accounts: list[str]) -> dict[str, Any]:
    os.environ["DAGSTER_HOME"] = str(home.resolve())  # Dagster refuses a relative home
    import dagster as dg

    instance = dg.DagsterInstance.get()
    out: dict[str, Any] = {"account_state": {}, "checks": {}, "runs": {}}
    for account in accounts:
        metas: list[Mapping[str, Any]] = []
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("account_state"), asset_partitions=[account]),
                limit=PAGE,
                cursor=cursor,
            )
            metas.extend(r.asset_materialization.metadata for r in page.records if r.asset_materialization)
            if not page.has_more:
                break
            cursor = page.cursor
        out["account_state"][account] = {
            "materializations": len(metas),
            "with_all_plotted": sum(all(k in m for k in PLOTTED) for m in metas),
            **{f"with_{k}": sum(k in m for m in metas) for k in PLOTTED},
        }
    evaluations: list[Any] = []
    after = None
    while True:
        chunk = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=PAGE,
            ascending=True,
        )
        evaluations.extend(chunk)
        if len(chunk) < PAGE:
            break
        after = chunk[-1].storage_id
    outcomes: Counter[str] = Counter()
    for record in evaluations:
        e = record.event_log_entry.dagster_event.event_specific_data
        if e.asset_key != dg.AssetKey("account_state"):
            outcomes["(other assets' checks)"] += 1
            continue
        state = "passed" if e.passed else e.severity.value
        outcomes[f"{e.partition}/{e.check_name}/{state}"] += 1
    out["checks"] = dict(sorted(outcomes.items()))
    runs: Counter[str] = Counter(
        f"{r.dagster_run.job_name}/{r.dagster_run.status.value}" for r in instance.get_run_records()
    )
    out["runs"] = dict(sorted(runs.items()))
    return out


def admin_equity(base: str, account: str) -> list[dict[str, Any]] | None:
    """The simulator's served-equity log, or None when this simulator has no /admin/equity."""
    try:
        with urllib.request.urlopen(f"{base}/admin/equity?account={account}", timeout=30) as response:
            return list(json.loads(response.read())["samples"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def compare_equity(curve: pl.DataFrame, snaps: pl.DataFrame, served: list[dict[str, Any]] | None,
                   polls: pl.DataFrame, fills: pl.DataFrame) -> dict[str, Any]:  # fmt: skip
    """Each curve sample against the simulator's figure; exact with the served log, nearest poll otherwise."""
    rows = curve.join(snaps.select("time_ms", "wallet_balance"), on="time_ms", how="left")
    if served is not None:
        sim = pl.DataFrame(served, schema={"account": pl.String, "time": pl.Int64, "wallet": pl.String,
                                           "upnl": pl.String, "equity": pl.String})  # fmt: skip
        misses = 0
        for row in rows.iter_rows(named=True):
            t = row["time_ms"]
            near = sim.filter((pl.col("time") >= t - 1_000) & (pl.col("time") < t + 5_000))
            if Decimal(str(row["equity"])) not in {Decimal(e) for e in near["equity"]}:
                misses += 1
        return {"source": "/admin/equity", "samples": rows.height, "equal": rows.height - misses, "ok": misses == 0}
    if polls.height == 0:
        return {"source": None, "samples": rows.height, "ok": None}
    polls = polls.sort("before_ms")
    matched = rows.sort("time_ms").join_asof(polls, left_on="time_ms", right_on="before_ms", strategy="nearest")
    fill_times = fills["time_ms"].to_list()
    diffs, wallet_equal, wallet_checked = [], 0, 0
    for r in matched.iter_rows(named=True):
        diffs.append(abs(Decimal(str(r["equity"])) - Decimal(r["equity_right"])))
        lo, hi = sorted((r["time_ms"], r["before_ms"]))
        if not any(lo - 1_000 <= f <= hi + 1_000 for f in fill_times):
            wallet_checked += 1
            wallet_equal += Decimal(str(r["wallet_balance"])) == Decimal(r["wallet"])
    gaps = (matched["time_ms"] - matched["before_ms"]).abs()
    ordered = sorted(diffs)
    return {
        "source": "poll (nearest in time)",
        "samples": rows.height,
        "poll_gap_ms_median": float(gaps.median() or 0),  # type: ignore[arg-type]
        "poll_gap_ms_max": float(gaps.max() or 0),  # type: ignore[arg-type]
        "equity_equal": sum(d == 0 for d in diffs),
        "equity_abs_diff_median": str(ordered[len(ordered) // 2]) if ordered else None,
        "equity_abs_diff_max": str(ordered[-1]) if ordered else None,
        "equity_rel_diff_max": float(max(d / Decimal(str(e)) for d, e in zip(diffs, rows["equity"], strict=True)))
        if diffs
        else None,
        "wallet_checked": wallet_checked,
        "wallet_equal": wallet_equal,
        "ok": wallet_equal == wallet_checked,
    }


def exchange_income(base: str, key: str, secret: str, start: int, end: int) -> pl.DataFrame:
    """Every income record in [start, end) from GET /fapi/v1/income, paged by time, deduplicated."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    since = start
    while True:
        page = signed_get(base, "/fapi/v1/income", key, secret, {"startTime": since, "endTime": end - 1, "limit": 1000})
        for r in page:
            rows[(r["tranId"], r["incomeType"], r["symbol"])] = r
        if len(page) < 1000:
            break
        since = max(int(page[-1]["time"]), since + 1)
    return pl.DataFrame(
        [(r["incomeType"], r["income"]) for r in rows.values()], schema={"type": pl.String, "income": pl.String},
        orient="row",
    )  # fmt: skip


def journal_windows(path: Path) -> set[tuple[int, str]]:
    """(decision time, symbol) of every journal fill: the windows the executor traded."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT DISTINCT c.window_ms, f.symbol FROM fills f JOIN children c ON c.client_id = f.client_id"
        ).fetchall()
    return {(int(w) + WINDOW_MS, str(s)) for w, s in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dagster-home", type=Path, required=True)
    parser.add_argument("--poll", type=Path, help="benchmarks/monitoring_poll.py output, when no /admin/equity")
    parser.add_argument("--start", type=int, help="ms; default: the first stored snapshot")
    parser.add_argument("--end", type=int, help="ms; default: 90 s before the newest stored snapshot")
    args = parser.parse_args()
    base, accounts = mock_accounts(args.config)
    paths = DataPaths(args.data_dir)
    polls = pl.read_ndjson(args.poll) if args.poll else pl.DataFrame()
    result: dict[str, Any] = {"dagster": dagster_counts(args.dagster_home, [a["account_id"] for a in accounts])}
    failed = []
    for account in accounts:
        aid = account["account_id"]
        store = AccountStore(paths, aid)
        snaps = store.read("snapshots")
        start = args.start if args.start is not None else int(snaps["time_ms"].min())  # type: ignore[arg-type]
        # Income reaches the store with each full snapshot (at least a minute apart): by default the range ends
        # 90 s before the newest snapshot, so everything the exchange booked in it has been synced.
        end = args.end if args.end is not None else int(snaps["time_ms"].max()) - 90_000  # type: ignore[arg-type]
        curve = store.read("equity", start, end)
        mine = polls.filter(pl.col("account_id") == aid) if polls.height else polls
        equity = compare_equity(curve, snaps, admin_equity(base, aid), mine, store.read("fills", start, end))
        report = account_report(paths, aid, start, end)
        income = exchange_income(base, account["api_key"], account["api_secret"], start, end)

        def total(kind: str, frame: pl.DataFrame = income) -> Decimal:
            return sum((Decimal(v) for v in frame.filter(pl.col("type") == kind)["income"]), Decimal(0))

        fees, funding = -total("COMMISSION"), total("FUNDING_FEE")
        counts = Counter(income["type"].to_list())
        traded = journal_windows(paths.execution(aid) / "journal.sqlite")
        traded = {(w, s) for w, s in traded if start <= w < end}
        rows = report.windows.filter(pl.col("shortfall_decision").is_not_null())
        reported = set(zip(rows["window_ms"].to_list(), rows["symbol"].to_list(), strict=True))
        with_arrival = report.windows.filter(pl.col("shortfall_arrival").is_not_null()).height
        account_result: dict[str, Any] = {
            "range_ms": [start, end],
            "equity_curve": equity,
            "income_records": dict(counts),
            "fees": {
                "report": str(report.totals["fees"]),
                "exchange": str(fees),
                "equal": Decimal(str(report.totals["fees"])) == fees,
            },
            "funding": {
                "report": str(report.totals["funding"]),
                "exchange": str(funding),
                "equal": Decimal(str(report.totals["funding"])) == funding,
            },
            "shortfall": {
                "executed_windows": len({w for w, _ in traded}),
                "executed_window_symbols": len(traded),
                "reported": len(traded & reported),
                "missing": sorted(traded - reported)[:10],
                "report_rows": report.windows.height,
                "with_arrival_shortfall": with_arrival,
            },
        }
        result[aid] = account_result
        for name, ok in (
            ("equity curve", equity["ok"]),
            ("fees", account_result["fees"]["equal"]),
            ("funding", account_result["funding"]["equal"]),
            ("shortfall", not (traded - reported) and bool(traded)),
        ):
            if ok is False:
                failed.append(f"{aid}: {name}")
    result["failed"] = failed
    print(json.dumps(result, indent=1, default=str))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
