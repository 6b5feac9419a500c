"""Shared fixtures: the real simulator (REST + WebSocket on one loopback port) with Settings pointed at it.

`sim_server` is module-scoped (one server per test file, faults reset after every test); `make_sim_server` builds
extra ones with other options (tight rate limits, short ping intervals, ...), stopped at the end of the test.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lsq.clock import SYSTEM_CLOCK
from lsq.clock import Clock as BaseClock
from lsq.config import Endpoints, Settings, load_config
from lsq.paths import DataPaths
from simulator.app import MARKET_HUB, BackgroundServer, build_app
from simulator.clock import Clock
from simulator.faults import Faults
from simulator.instruments import select_instruments
from simulator.market import Market
from simulator.ratelimit import RateLimits
from simulator.streams import MarketStreamHub, StreamSettings
from simulator.trading import Exchange
from simulator.user_stream import UserStreamHub

# Test timings: quick housekeeping so pings, pong timeouts and lifetimes are observable in seconds.
TEST_STREAMS = StreamSettings(housekeeping_s=0.1)


@dataclass
class SimServer:
    """A running simulator and everything a test needs to drive or inspect it."""

    server: BackgroundServer
    market: Market
    clock: Clock
    faults: Faults
    engine: Exchange
    users: UserStreamHub
    settings: Settings
    data_dir: Path
    limits: RateLimits
    stream_settings: StreamSettings
    _closed: bool = field(default=False, repr=False)

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def market_hub(self) -> MarketStreamHub:
        assert self.server.app is not None
        return self.server.app[MARKET_HUB]

    @property
    def accounts(self) -> list[Any]:
        return list(self.settings.execution.mock.accounts)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET (no body) or POST (JSON body) an /admin/... path; returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.rest_url}/admin/{path.lstrip('/')}",
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's event loop (hub state belongs to it), waiting as long as a loaded machine needs."""
        return self.server.call(fn, timeout=60.0)

    def stop(self) -> None:
        if not self._closed:
            self._closed = True
            self.server.stop()
            self.engine.close()


def start_sim_server(
    data_dir: Path,
    *,
    symbols: int = 6,
    seed: int = 7,
    firehose: float = 1.0,
    limits: RateLimits | None = None,
    stream_settings: StreamSettings = TEST_STREAMS,
    fault_seed: int = 0,
    clock_base: BaseClock = SYSTEM_CLOCK,
) -> SimServer:
    """Start a simulator on a free 127.0.0.1 port with its account state under `data_dir`; pass a FakeClock as
    `clock_base` to move the server's time by hand."""
    base = load_config()
    accounts = base.execution.mock.accounts
    clock = Clock(base=clock_base)
    faults = Faults(clock=clock, seed=fault_seed)
    market = Market(select_instruments(symbols), seed=seed, rate_multiplier=firehose)
    users = UserStreamHub(clock, faults, stream_settings)
    state_dir = DataPaths(data_dir).simulator
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = Exchange(market, clock, state_dir, list(accounts), users.publish, fresh=True)
    limits = limits or RateLimits()
    server = BackgroundServer(
        lambda: build_app(
            market,
            clock,
            faults,
            engine,
            limits,
            accounts=accounts,
            stream_settings=stream_settings,
            user_hub=users,
        )
    )
    try:
        server.start()
    except Exception:
        engine.close()
        raise
    endpoints = Endpoints(rest_url=server.rest_url, ws_url=server.ws_url, data_url=f"{server.rest_url}/data")
    settings = base.model_copy(
        update={
            "binance": base.binance.model_copy(update={"mock": endpoints}),
            "data": base.data.model_copy(update={"data_dir": data_dir}),
        }
    )
    return SimServer(server, market, clock, faults, engine, users, settings, data_dir, limits, stream_settings)


@pytest.fixture(scope="module")
def _module_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    sim = start_sim_server(tmp_path_factory.mktemp("sim-data"))
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim_server(_module_sim_server: SimServer) -> Iterator[SimServer]:
    """The shared simulator of this test module; faults are reset after each test."""
    yield _module_sim_server
    _module_sim_server.call(_module_sim_server.faults.reset)


@pytest.fixture(scope="module")
def _module_busy_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    sim = start_sim_server(tmp_path_factory.mktemp("busy-sim-data"), symbols=4, firehose=3.0)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def busy_sim_server(_module_busy_sim_server: SimServer) -> Iterator[SimServer]:
    """A simulator trading three times faster than normal (4 symbols), so a few seconds hold plenty of aggTrades."""
    yield _module_busy_sim_server
    _module_busy_sim_server.call(_module_busy_sim_server.faults.reset)


@pytest.fixture
def settings(sim_server: SimServer) -> Settings:
    """lsq Settings whose mock endpoints and data directory point at `sim_server`."""
    return sim_server.settings


@pytest.fixture
def make_sim_server(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Factory for extra simulators with other options; each is stopped when the test ends."""
    started: list[SimServer] = []

    def make(**options: Any) -> SimServer:
        sim = start_sim_server(tmp_path / f"sim-{len(started)}", **options)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()
