"""The user's configuration: one typed, validated model loaded from YAML, with environment overrides.

Secrets are `SecretStr`, so they never show in reprs, logs, errors or Dagster run config; no error message shows
a value written under an account, nor a line of the YAML file (it could be a secret).
"""

from __future__ import annotations

import logging
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.timelabels import DAY_MS, day_start, format_day

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "default.yaml"

Mode = Literal["mock", "testnet", "live"]


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what is allowed."""


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite number is never a meaningful setting (a NaN weight empties the alpha).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AlphaSettings(_Strict):
    concurrency: Literal["thread", "process", "none"] = "thread"
    max_workers: int | None = Field(default=None, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    min_success_ratio: float = Field(default=0.5, ge=0, le=1)
    timeout_streak: int = Field(default=3, ge=1)
    cooldown_windows: int = Field(default=12, ge=0)


class CalculatorSettings(_Strict):
    enabled: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)


class StrategySettings(_Strict):
    history_days: int = Field(default=30, ge=1, le=365)
    # The universe that is traded (lsq.stores.universes): factor views, target positions and the bar coverage check.
    universe_version: Literal["v1", "v2"] = "v2"
    calculation_interval: Literal["5m"] = "5m"
    alpha: AlphaSettings = AlphaSettings()
    calculators: CalculatorSettings = CalculatorSettings()


class ContractSettings(_Strict):
    margin_type: Literal["CROSSED", "ISOLATED"] = "CROSSED"
    position_mode: Literal["one_way", "dual_side"] = "one_way"
    leverage: int = Field(default=2, ge=1, le=125)


class SizingSettings(_Strict):
    gross_leverage: float = Field(default=1.0, gt=0, le=125)
    dollar_neutral: bool = True
    max_symbol_share: float = Field(default=1.0, gt=0, le=1)


class Account(_Strict):
    account_id: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    starting_balance_usdt: float = Field(default=100_000.0, ge=0)

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key and self.api_secret and self.api_key.get_secret_value())


class ModeAccounts(_Strict):
    accounts: list[Account] = Field(default_factory=list)

    @field_validator("accounts")
    @classmethod
    def _unique_ids(cls, accounts: list[Account]) -> list[Account]:
        ids = [a.account_id for a in accounts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate account_id {dupes}")
        return accounts


# ----- Execution: algorithms, limits and safety (executors/; issue 10) -----


class TwapSettings(_Strict):
    """Defaults fit the 5-minute cycle: 8 slices of 30 s finish in 3.5 minutes, before the next window's target."""

    horizon_seconds: float = Field(default=240.0, gt=0, le=86_400)
    interval_seconds: float = Field(default=30.0, gt=0)
    passive: bool = False  # rest a post-only limit between slices (cancelled before the next slice)
    # the passive price: None = the touch from bookTicker; QUEUE... lets the exchange set it (priceMatch)
    price_match: Literal["QUEUE", "QUEUE_5", "QUEUE_10", "QUEUE_20"] | None = None


class VwapSettings(_Strict):
    horizon_seconds: float = Field(default=240.0, gt=0, le=86_400)
    interval_seconds: float = Field(default=30.0, gt=0)
    lookback_days: int = Field(default=7, ge=1, le=90)  # days of stored 5-minute bars behind the volume profile


class AlgorithmSettings(_Strict):
    name: Literal["market", "twap", "vwap"] = "twap"
    twap: TwapSettings = TwapSettings()
    vwap: VwapSettings = VwapSettings()

    @property
    def horizon_seconds(self) -> float:
        """How long the executor works a target: a market order at once, TWAP/VWAP over their horizon."""
        return {"market": 0.0, "twap": self.twap.horizon_seconds, "vwap": self.vwap.horizon_seconds}[self.name]


class ExecutionLimits(_Strict):
    max_order_notional: float | None = Field(default=25_000.0, gt=0)  # USDT per child order (larger ones split)
    max_gross_leverage: float | None = Field(default=3.0, gt=0, le=125)  # sum |notional| / equity after trading
    max_symbol_share: float | None = Field(default=0.25, gt=0, le=1)  # one symbol's share of the gross limit


class ExecutorSettings(_Strict):
    algorithm: AlgorithmSettings = AlgorithmSettings()
    accounts: dict[str, AlgorithmSettings] = Field(default_factory=dict)  # per-account algorithm overrides
    no_trade_band_usdt: float = Field(default=10.0, ge=0)  # smaller moves are not traded (closes always are)
    limits: ExecutionLimits = ExecutionLimits()
    max_drawdown: float | None = Field(default=0.2, gt=0, lt=1)  # equity this far below its peak halts the account
    max_target_age_seconds: float = Field(default=600.0, gt=0)  # automatic runs skip older targets
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    dead_man_seconds: float = Field(default=120.0, ge=10, le=3_600)  # countdownCancelAll while orders rest
    batch_orders: bool = True  # send up to 5 children per request (POST /fapi/v1/batchOrders)

    def algorithm_for(self, account_id: str) -> AlgorithmSettings:
        return self.accounts.get(account_id, self.algorithm)


# ----- end of the execution block -----


# ----- monitoring: the Dagster checks' thresholds and the alerts (lsq_pipeline/defs/monitoring; issue 11) -----
# (The web monitor's own settings, host, port and token, live apart under `monitor:` below.)


class Threshold(_Strict):
    """A measure's WARN and ERROR levels. `above`: a value above a level breaches it (leverage, margin ratio);
    else a value below it does (available share)."""

    warn: float = Field(ge=0)
    error: float = Field(ge=0)
    above: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if (self.above and self.error < self.warn) or (not self.above and self.error > self.warn):
            worse = "above" if self.above else "below"
            raise ValueError(f"error must be at or {worse} warn (got warn {self.warn}, error {self.error})")
        return self


class CheckThresholds(_Strict):
    deviation: Threshold = Threshold(warn=0.05, error=0.15)  # Σ |current − target| × mark / target gross
    leverage: Threshold = Threshold(warn=2.5, error=3.0)  # gross notional / equity
    largest_share: Threshold = Threshold(warn=0.3, error=0.5)  # the largest symbol's share of gross
    margin_ratio: Threshold = Threshold(warn=0.3, error=0.6)  # Binance's: 1.0 is liquidation
    available_share: Threshold = Threshold(warn=0.2, error=0.05, above=False)  # available / margin balance
    snapshot_age_seconds: Threshold = Threshold(warn=180, error=600)  # the watcher's newest snapshot
    # Deviation is judged from a target's decision time + the account's executor horizon + this grace (the executor
    # starts after the window is sealed and computed); until then the check reads "converging". Keep horizon +
    # grace under the 5-minute cycle, or each target is replaced before it is judged.
    deviation_grace_seconds: float = Field(default=30.0, ge=0, le=3_600)


class AlertSettings(_Strict):
    webhook_url: SecretStr | None = None  # POSTed JSON {title, text, severity, account, ...}; it may hold a token
    cooldown_seconds: float = Field(default=900.0, ge=0)  # no second alert of one key within this
    timeout_seconds: float = Field(default=5.0, gt=0, le=30)  # a webhook POST (the sensor tick must not hang)


class MonitoringSettings(_Strict):
    checks: CheckThresholds = CheckThresholds()
    alerts: AlertSettings = AlertSettings()


# ----- end of the monitoring block -----


class ExecutionSettings(_Strict):
    mode: Mode = "mock"
    dry_run: bool = False
    contract_settings: ContractSettings = ContractSettings()
    sizing: SizingSettings = SizingSettings()
    executor: ExecutorSettings = ExecutorSettings()
    mock: ModeAccounts = ModeAccounts()
    testnet: ModeAccounts = ModeAccounts()
    live: ModeAccounts = ModeAccounts()

    def accounts_for(self, mode: Mode | None = None) -> list[Account]:
        return list(getattr(self, mode or self.mode).accounts)


class UniverseSettings(_Strict):
    top_n: int = Field(default=30, ge=1)
    min_listing_days: int = Field(default=30, ge=0)


class TranStatsSettings(_Strict):
    usd_rmb_rate: float = Field(default=7.0, gt=0)
    thresholds_rmb: tuple[float, float, float] = (40_000.0, 200_000.0, 1_000_000.0)

    @field_validator("thresholds_rmb")
    @classmethod
    def _increasing(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not (0 < v[0] < v[1] < v[2]):
            raise ValueError("thresholds must be three increasing positive numbers")
        return v

    @property
    def thresholds_usd(self) -> tuple[float, float, float]:
        r = self.usd_rmb_rate
        return (self.thresholds_rmb[0] / r, self.thresholds_rmb[1] / r, self.thresholds_rmb[2] / r)


class DataSettings(_Strict):
    data_dir: Path = Path("data")
    universe_refresh_time: str = Field(default="23:55", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "Asia/Shanghai"
    universe: UniverseSettings = UniverseSettings()
    partitions_start: str | None = None
    seal_lag_seconds: float = Field(default=2.0, ge=0, le=60)
    tran_stats: TranStatsSettings = TranStatsSettings()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Asia/Shanghai)") from exc
        return v

    @field_validator("partitions_start", mode="before")
    @classmethod
    def _real_date(cls, v: object) -> object:
        """A calendar date YYYY-MM-DD (2026-13-45 is refused here, not later inside Dagster)."""
        if v is None:
            return None
        if isinstance(v, date):
            return v.isoformat()
        if not isinstance(v, str):
            raise ValueError("must be a date YYYY-MM-DD")
        try:
            parsed = datetime.strptime(v, "%Y-%m-%d").date()
        except ValueError:
            raise ValueError("must be a real date YYYY-MM-DD") from None
        if parsed.isoformat() != v:
            raise ValueError("must be a real date YYYY-MM-DD")
        return v


class Endpoints(_Strict):
    rest_url: str = Field(pattern=r"^https?://")
    ws_url: str = Field(pattern=r"^wss?://")
    data_url: str = Field(pattern=r"^https?://")


class BinanceSettings(_Strict):
    mock: Endpoints = Endpoints(
        rest_url="http://127.0.0.1:8765", ws_url="ws://127.0.0.1:8765", data_url="http://127.0.0.1:8765/data"
    )
    testnet: Endpoints = Endpoints(
        rest_url="https://testnet.binancefuture.com",
        ws_url="wss://fstream.binancefuture.com",
        data_url="https://data.binance.vision/data",
    )
    live: Endpoints = Endpoints(
        rest_url="https://fapi.binance.com",
        ws_url="wss://fstream.binance.com",
        data_url="https://data.binance.vision/data",
    )


# --- monitor: the web monitor (monitoring/web); kept in one block apart from the other sections ---------------


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class MonitorSettings(_Strict):
    """Where `lsq monitor` listens. Binding beyond loopback needs a token (here or $LSQ_MONITOR_TOKEN)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    token: SecretStr | None = None

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


# --- end of monitor block -------------------------------------------------------------------------------------


class Settings(_Strict):
    strategy: StrategySettings = StrategySettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    execution: ExecutionSettings = ExecutionSettings()
    data: DataSettings = DataSettings()
    binance: BinanceSettings = BinanceSettings()
    monitor: MonitorSettings = MonitorSettings()

    @property
    def data_dir(self) -> Path:
        return self.data.data_dir

    def first_partition_day(self, now_ms: int) -> str:
        """`data.partitions_start` if set, else the UTC day `strategy.history_days` + PARTITIONS_MARGIN_DAYS before
        today: the partitions then cover the history the strategy asks for (so `lsq backfill` of that history is
        allowed) and stay far below Dagster's 100,000 per asset without anyone rolling a date by hand."""
        if self.data.partitions_start is not None:
            return self.data.partitions_start
        return format_day(day_start(now_ms) - (self.strategy.history_days + PARTITIONS_MARGIN_DAYS) * DAY_MS)

    def endpoints(self, mode: Mode | None = None) -> Endpoints:
        endpoints: Endpoints = getattr(self.binance, mode or self.execution.mode)
        return endpoints

    def usable_accounts(self, mode: Mode | None = None) -> tuple[list[Account], dict[str, str]]:
        """Accounts with credentials, and for the others the reason they are not started."""
        ready: list[Account] = []
        skipped: dict[str, str] = {}
        mode = mode or self.execution.mode
        for account in self.execution.accounts_for(mode):
            if account.has_credentials:
                ready.append(account)
            elif mode == "mock":
                skipped[account.account_id] = "no credentials: set api_key/api_secret under execution.mock.accounts"
            else:
                prefix = account.account_id.upper() + ("_TESTNET" if mode == "testnet" else "")
                skipped[account.account_id] = (
                    f"no credentials: set {prefix}_API_KEY and {prefix}_API_SECRET "
                    f"or api_key/api_secret under execution.{mode}.accounts"
                )
        return ready, skipped


PARTITIONS_MARGIN_DAYS = 2
SECRET_FIELDS = frozenset({"api_key", "api_secret", "token"})
PRIVATE_SECTIONS = SECRET_FIELDS | {"accounts"}
ALLOWED_NOTES = {"strategy.calculation_interval": "the pipeline computes one alpha per sealed 5-minute window"}
SIMULATOR_ONLY = "starting_balance_usdt"


def _shown_input(err: ErrorDetails) -> str:
    """What the user wrote, for the message: scalars only, and never anything under an account list or credential
    (an account written as a plain string, or an error about the list as a whole, would echo keys and secrets)."""
    value = err.get("input")
    if err["type"] == "extra_forbidden" or PRIVATE_SECTIONS & {str(p) for p in err["loc"]}:
        return ""
    if not isinstance(value, str | int | float | bool) or value is None:
        return ""
    return f" (got {value!r})"


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected']}"
            if key in ALLOWED_NOTES:
                msg += f" ({ALLOWED_NOTES[key]})"
        elif err["type"] == "finite_number":
            msg = "must be a finite number (not NaN or infinite)"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}{_shown_input(err)}")
    return "\n".join(lines)


class _DatesAsText(yaml.SafeLoader):
    """SafeLoader that leaves dates as text: the model validates them, naming the key (PyYAML would raise a bare
    ValueError for `2026-13-45` and turn `2026-11-01` into a date object)."""


_DatesAsText.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's snippet of the offending line (it may hold a secret)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "syntax error"
    return f"{problem}{where}"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def unread_settings(raw: dict[str, Any]) -> list[str]:
    """Keys the user set that nothing acts on in their place: one line each, for a warning at load."""
    notes = []
    execution = _mapping(raw.get("execution"))
    for mode in ("testnet", "live"):
        accounts = _mapping(execution.get(mode)).get("accounts")
        for i, account in enumerate(accounts if isinstance(accounts, list) else []):
            if isinstance(account, dict) and SIMULATOR_ONLY in account:
                notes.append(
                    f"execution.{mode}.accounts.{i}.{SIMULATOR_ONLY} is ignored: only the simulator (mode mock) "
                    "reads it; a real account's balance comes from the exchange"
                )
    return notes


def _apply_env_credentials(raw: dict[str, Any], env: dict[str, str]) -> None:
    """Environment credentials take precedence over the file, per account and mode."""
    execution = raw.get("execution") or {}
    if not isinstance(execution, dict):
        raise ConfigError("execution: must be a mapping of settings")
    raw["execution"] = execution
    for mode, suffix in (("testnet", "_TESTNET"), ("live", "")):
        section = execution.get(mode) or {}
        if not isinstance(section, dict) or not isinstance(section.get("accounts") or [], list):
            raise ConfigError(f"execution.{mode}: must be a mapping with an `accounts` list")
        for account in section.get("accounts") or []:
            if not isinstance(account, dict) or "account_id" not in account:
                continue
            prefix = str(account["account_id"]).upper() + suffix
            for field, var in (("api_key", f"{prefix}_API_KEY"), ("api_secret", f"{prefix}_API_SECRET")):
                if env.get(var):
                    account[field] = env[var]


def load_config(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None, clock: Clock = SYSTEM_CLOCK
) -> Settings:
    """Load the configuration: `path`, else $LSQ_CONFIG, else config/default.yaml; then environment overrides.

    Relative data directories are resolved against the project root so every process agrees on them. An absent
    `data.partitions_start` is filled from `clock` (see Settings.first_partition_day). Settings nothing acts on
    are warned about, one line each.
    """
    env = dict(os.environ) if env is None else env
    source = Path(path or env.get("LSQ_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {source}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_DatesAsText) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {source} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {source} must be a mapping of sections, got {type(raw).__name__}")
    _apply_env_credentials(raw, env)
    if env.get("LSQ_MONITOR_TOKEN"):
        monitor = raw.get("monitor") or {}
        if not isinstance(monitor, dict):
            raise ConfigError("monitor: must be a mapping of settings")
        raw["monitor"] = {**monitor, "token": env["LSQ_MONITOR_TOKEN"]}
    if env.get("LSQ_DATA_DIR"):
        raw["data"] = {**(raw.get("data") or {}), "data_dir": str(Path(env["LSQ_DATA_DIR"]).resolve())}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(source))) from None
    for note in unread_settings(raw):
        log.warning("configuration %s: %s", source, note)
    data_dir = settings.data.data_dir
    if not data_dir.is_absolute():
        data_dir = (PROJECT_ROOT / data_dir).resolve()
    start = settings.first_partition_day(clock.now_ms())
    data = settings.data.model_copy(update={"data_dir": data_dir, "partitions_start": start})
    return settings.model_copy(update={"data": data})
