"""The user's configuration: one typed, validated model loaded from YAML, with environment overrides.

Secrets are `SecretStr`, so they never show in reprs, logs, errors or Dagster run config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "default.yaml"

Mode = Literal["mock", "testnet", "live"]


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlphaSettings(_Strict):
    concurrency: Literal["thread", "process", "none"] = "thread"
    max_workers: int | None = Field(default=None, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    min_success_ratio: float = Field(default=0.5, ge=0, le=1)


class CalculatorSettings(_Strict):
    enabled: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)


class StrategySettings(_Strict):
    history_days: int = Field(default=30, ge=1, le=365)
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


class ExecutionSettings(_Strict):
    mode: Mode = "mock"
    dry_run: bool = False
    contract_settings: ContractSettings = ContractSettings()
    sizing: SizingSettings = SizingSettings()
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
    partitions_start: str = Field(default="2026-11-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
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


class Settings(_Strict):
    strategy: StrategySettings = StrategySettings()
    execution: ExecutionSettings = ExecutionSettings()
    data: DataSettings = DataSettings()
    binance: BinanceSettings = BinanceSettings()

    @property
    def data_dir(self) -> Path:
        return self.data.data_dir

    def endpoints(self, mode: Mode | None = None) -> Endpoints:
        return getattr(self.binance, mode or self.execution.mode)

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


SECRET_FIELDS = frozenset({"api_key", "api_secret"})


def _shown_input(err: dict) -> str:
    """What the user wrote, for the message: scalars only, and never anything under a credential or account list
    (an error about the list as a whole would otherwise echo every key and secret in it)."""
    value = err.get("input")
    if err["type"] == "extra_forbidden" or SECRET_FIELDS & {str(p) for p in err["loc"]}:
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
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}{_shown_input(err)}")
    return "\n".join(lines)


def _apply_env_credentials(raw: dict, env: dict[str, str]) -> None:
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


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load the configuration: `path`, else $LSQ_CONFIG, else config/default.yaml; then environment overrides.

    Relative data directories are resolved against the project root so every process agrees on them.
    """
    env = dict(os.environ) if env is None else env
    source = Path(path or env.get("LSQ_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {source}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {source} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {source} must be a mapping of sections, got {type(raw).__name__}")
    _apply_env_credentials(raw, env)
    if env.get("LSQ_DATA_DIR"):
        raw["data"] = {**(raw.get("data") or {}), "data_dir": str(Path(env["LSQ_DATA_DIR"]).resolve())}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(source))) from None
    data_dir = settings.data.data_dir
    if not data_dir.is_absolute():
        data_dir = (PROJECT_ROOT / data_dir).resolve()
    return settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": data_dir})})
