"""The one resource every LSQ asset needs: the configuration, its data paths and an exchange client.

The mode in the configuration (mock | testnet | live) chooses the exchange endpoints, so the same assets run against
the simulator, testnet or Binance. Tests point it at a temporary data directory and a simulator on a free port.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard, get_args

import dagster as dg
from pydantic import PrivateAttr

from lsq.config import Endpoints, Mode, Settings, load_config
from lsq.exchange import rest_client
from lsq.paths import DataPaths

if TYPE_CHECKING:
    from binance import Client


def _is_mode(value: str) -> TypeGuard[Mode]:
    return value in get_args(Mode)


class LsqResource(dg.ConfigurableResource):
    """Settings from `config_path` (else $LSQ_CONFIG, else config/default.yaml), with optional overrides."""

    config_path: str | None = None
    data_dir: str | None = None
    mode: str | None = None
    rest_url: str | None = None
    ws_url: str | None = None
    data_url: str | None = None

    _settings: Settings | None = PrivateAttr(default=None)

    @classmethod
    def for_settings(cls, settings: Settings, config_path: str | None = None) -> LsqResource:
        """A resource that reproduces `settings`' data directory, mode and endpoints."""
        endpoints = settings.endpoints()
        return cls(
            config_path=config_path,
            data_dir=str(settings.data_dir),
            mode=settings.execution.mode,
            rest_url=endpoints.rest_url,
            ws_url=endpoints.ws_url,
            data_url=endpoints.data_url,
        )

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self._load()
        return self._settings

    def _load(self) -> Settings:
        settings = load_config(self.config_path)
        mode = self.mode or settings.execution.mode
        if not _is_mode(mode):
            raise ValueError(f"mode {mode!r} must be one of {', '.join(get_args(Mode))}")
        data = (
            settings.data
            if self.data_dir is None
            else settings.data.model_copy(update={"data_dir": Path(self.data_dir).resolve()})
        )
        execution = settings.execution.model_copy(update={"mode": mode})
        binance = settings.binance
        urls = {"rest_url": self.rest_url, "ws_url": self.ws_url, "data_url": self.data_url}
        overrides = {k: v.rstrip("/") for k, v in urls.items() if v is not None}
        if overrides:
            endpoints = Endpoints.model_validate({**settings.endpoints(mode).model_dump(), **overrides})
            binance = binance.model_copy(update={mode: endpoints})
        return settings.model_copy(update={"data": data, "execution": execution, "binance": binance})

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.settings.data_dir)

    @cached_property
    def _client(self) -> Client:
        return rest_client(self.settings)

    def rest(self) -> Client:
        """A python-binance client on the configured exchange (public endpoints only: no account)."""
        return self._client
