"""The account-state checks: deviation, exposure and health against the configured WARN and ERROR levels.

One pure function (`evaluate`) judges an account view. account_state_sensor judges every snapshot and, when an
account's levels change, requests one run of `account_checks_job`, which records exactly those outcomes as check
evaluations of the account's partition. Why a run and not a runless event like the materializations: Dagster
1.13 stores a runless check evaluation under run id "" with a unique (check, run id, partition) index, so the
second runless evaluation of one partition fails the sensor tick (IntegrityError, measured); a run per level
change is rare. The checks are declared with a body over the same function, so the UI lists them per account;
Dagster 1.13 cannot execute a partitioned check of an external asset on its own (measured: "There is no
PartitionsDefinition shared by all the provided assets"), so account_checks_job is what records them.

Deviation is judged only once the executor had its chance: from the target's decision time + the account's
algorithm horizon (MARKET 0, TWAP/VWAP horizon_seconds) + `deviation_grace_seconds`, by the snapshot's time. Before
that the outcome is "converging": its level is the one last judged (a breach does not resolve and fire again with
every new target, and a new target does not read ERROR while the TWAP works it), its metadata says so.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import CheckThresholds, Threshold
from lsq_pipeline.defs.monitoring.assets import ACCOUNT_STATE, ACCOUNTS
from lsq_pipeline.resources import LsqResource
from monitoring.state import AccountView, account_view

Level = Literal["OK", "WARN", "ERROR"]
RANK: dict[str, int] = {"OK": 0, "WARN": 1, "ERROR": 2}

Measure = Callable[[AccountView, int], float | None]


def _snapshot_age_seconds(view: AccountView, now_ms: int) -> float:
    return max(0.0, (now_ms - int(view.snapshot["time_ms"])) / 1000)


# check -> (measure name in CheckThresholds, how to read it from a view at `now_ms`)
MEASURES: dict[str, list[tuple[str, Measure]]] = {
    "deviation": [("deviation", lambda v, _: v.deviation.share if v.deviation else None)],
    "exposure": [
        ("leverage", lambda v, _: v.exposure.leverage),
        ("largest_share", lambda v, _: v.exposure.largest_share),
    ],
    "health": [
        ("margin_ratio", lambda v, _: v.health.margin_ratio),
        ("available_share", lambda v, _: v.health.available_share),
        ("snapshot_age_seconds", _snapshot_age_seconds),
    ],
}
DESCRIPTIONS = {
    "deviation": "Σ |current − target| × mark as a share of the target's gross notional",
    "exposure": "leverage (gross / equity) and the largest symbol's share of gross, at mark",
    "health": "margin ratio, available share of the margin balance, and the age of the newest snapshot",
}


def level(value: float | None, threshold: Threshold) -> Level:
    """A value at a level breaches it; no value (no targets, no equity) breaches nothing."""
    if value is None:
        return "OK"
    if threshold.above:
        return "ERROR" if value >= threshold.error else "WARN" if value >= threshold.warn else "OK"
    return "ERROR" if value <= threshold.error else "WARN" if value <= threshold.warn else "OK"


@dataclass(frozen=True)
class Outcome:
    check: str
    level: Level
    values: dict[str, float | None]
    breaches: list[str] = field(default_factory=list)
    converging_until_ms: int | None = None  # deviation only: not judged before this (the level is the last judged)

    @property
    def passed(self) -> bool:
        return self.level == "OK"

    @property
    def state(self) -> str:
        if self.converging_until_ms is None:
            return "judged"
        return f"converging until {_utc(self.converging_until_ms)}"

    @property
    def description(self) -> str:
        if self.converging_until_ms is not None:
            return f"{self.state} (not judged yet; level {self.level} as last judged)"
        return "; ".join(self.breaches) if self.breaches else "within limits"

    def metadata(self) -> dict[str, dg.MetadataValue]:
        meta = {k: dg.MetadataValue.float(v) for k, v in self.values.items() if v is not None}
        return {**meta, "level": dg.MetadataValue.text(self.level), "state": dg.MetadataValue.text(self.state)}

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def evaluation(self, account_id: str) -> dg.AssetCheckEvaluation:
        return dg.AssetCheckEvaluation(
            asset_key=ACCOUNT_STATE,
            check_name=self.check,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR if self.level == "ERROR" else dg.AssetCheckSeverity.WARN,
            metadata=self.metadata(),
            description=self.description,
            partition=account_id,
        )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def judged_from_ms(view: AccountView, horizon_seconds: float, thresholds: CheckThresholds) -> int | None:
    """When the deviation from the view's target is first judged (None: no target to judge against)."""
    if view.target_ms is None:
        return None
    return view.target_ms + round((horizon_seconds + thresholds.deviation_grace_seconds) * 1000)


def evaluate(
    view: AccountView, now_ms: int, thresholds: CheckThresholds, horizon_seconds: float, held: Level = "OK"
) -> list[Outcome]:
    """Every check's outcome: its worst measure's level, with one line per breached measure. A snapshot taken
    before the deviation is judged (see judged_from_ms) keeps the deviation at `held`, the level last judged."""
    outcomes = []
    for check, measures in MEASURES.items():
        values: dict[str, float | None] = {}
        breaches: list[str] = []
        worst: Level = "OK"
        for name, read in measures:
            value = read(view, now_ms)
            values[name] = value
            threshold: Threshold = getattr(thresholds, name)
            got = level(value, threshold)
            if got != "OK":
                bound = threshold.error if got == "ERROR" else threshold.warn
                breaches.append(f"{name} {value:.4g} {'≥' if threshold.above else '≤'} {bound:g} ({got})")
                worst = got if RANK[got] > RANK[worst] else worst
        due = judged_from_ms(view, horizon_seconds, thresholds) if check == "deviation" else None
        if due is not None and int(view.snapshot["time_ms"]) < due:
            outcomes.append(Outcome(check, held, values, [], converging_until_ms=due))
        else:
            outcomes.append(Outcome(check, worst, values, breaches))
    return outcomes


def account_checks(thresholds: CheckThresholds, clock: Clock = SYSTEM_CLOCK) -> list[dg.AssetChecksDefinition]:
    """The checks' declarations (per account); their body judges the account now, as the sensor does (without the
    sensor's memory: a converging deviation reads OK here)."""

    def build(check: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=ACCOUNT_STATE, name=check, partitions_def=ACCOUNTS, description=DESCRIPTIONS[check])
        def _check(context: dg.AssetCheckExecutionContext, lsq: LsqResource) -> dg.AssetCheckResult:
            account = context.partition_key
            view = account_view(lsq.paths, account)
            if view is None:
                return dg.AssetCheckResult(
                    passed=False, severity=dg.AssetCheckSeverity.WARN, description=f"no snapshot of {account} yet"
                )
            horizon = lsq.settings.execution.executor.algorithm_for(account).horizon_seconds
            outcome = next(o for o in evaluate(view, clock.now_ms(), thresholds, horizon) if o.check == check)
            return dg.AssetCheckResult(
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR if outcome.level == "ERROR" else dg.AssetCheckSeverity.WARN,
                metadata=outcome.metadata(),
                description=outcome.description,
            )

        return _check

    return [build(check) for check in MEASURES]


CHECKS_JOB = "account_checks_job"
# Not `lsq/account`: that tag is limited to one run per account (the executions), and a check run must not wait
# behind a TWAP.
CHECKED_ACCOUNT_TAG = "lsq/checked_account"


class AccountChecksConfig(dg.Config):
    account: str
    outcomes: str  # JSON list of Outcome.as_dict(), as judged by the sensor


@dg.op(name="record_account_checks")
def record_account_checks(context: dg.OpExecutionContext, config: AccountChecksConfig) -> None:
    """Record the sensor's outcomes as the account partition's check evaluations (no re-judging: what was
    recorded is what the sensor saw)."""
    for raw in json.loads(config.outcomes):
        outcome = Outcome(**raw)
        # Dagster 1.13's log_event records an AssetCheckEvaluation, though its UserEvent type leaves it out.
        context.log_event(outcome.evaluation(config.account))  # type: ignore[arg-type]  # handled; UserEvent omits it


@dg.job(name=CHECKS_JOB, tags={"dagster/max_retries": "0"}, description="Records one account's check outcomes.")
def account_checks_job() -> None:
    record_account_checks()


def checks_request(account_id: str, snapshot_ms: int, outcomes: list[Outcome]) -> dg.RunRequest:
    levels = ",".join(f"{o.check}={o.level}" for o in outcomes)
    return dg.RunRequest(
        run_key=f"{account_id}:{snapshot_ms}:{levels}",
        job_name=CHECKS_JOB,
        run_config=dg.RunConfig(
            ops={
                "record_account_checks": AccountChecksConfig(
                    account=account_id, outcomes=json.dumps([o.as_dict() for o in outcomes])
                )
            }
        ),
        tags={CHECKED_ACCOUNT_TAG: account_id},
    )
