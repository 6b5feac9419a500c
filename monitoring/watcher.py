"""The account watcher: one process following every account of the configured mode, writing the account store.

Per account two loops share one python-binance AsyncClient:
- the user data stream (/private/ws?listenKey=K, the key kept alive every 30 min): ORDER_TRADE_UPDATE gives the
  order log and fills as they happen; any event asks for a light snapshot (account and positionRisk, at most
  every 5 s), so equity follows a fill within seconds;
- a REST snapshot (account, positionRisk, the marks of targeted symbols not held, income since shortly before the last
  stored record, and the fills the income names that the stream did not deliver) at least every `snapshot_interval_s`,
  after which the completed minutes of the equity curve are appended.
The stream is fast, REST is the truth: a fill missed while the socket was down is found through the income record's
tradeId, and income is re-read from the last stored record's time (the store deduplicates), so nothing is lost
across reconnects or restarts. Failures reconnect with jittered exponential backoff, like the collector; one
account's failure never stops another. Time comes from an injected `lsq.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl
import websockets

from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import Account, Mode, Settings
from lsq.exchange import async_rest_client
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS
from monitoring import records
from monitoring.state import update_equity_curve
from monitoring.store import AccountStore, as_frame
from monitoring.targets import latest_target

log = logging.getLogger(__name__)

INCOME_PAGE = 1000
TRADES_PAGE = 1000
# Records can be published after later ones (funding is stamped with the funding time, booked moments later): each
# sync re-reads this much before the newest stored record, which costs nothing while it stays within one page.
INCOME_OVERLAP_MS = 15 * 60_000
INCOME_SPAN_MS = 7 * DAY_MS  # one income request spans at most 7 days (safe under any of Binance's limits)
RATE_LIMIT_PAUSE_S = 60.0
_STABLE_S = 10.0  # a stream that lived this long resets the backoff
_TRADE_INCOME = ("COMMISSION", "REALIZED_PNL")


def backoff_delay(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Jittered exponential backoff: a random delay in [half, all] of min(cap, base * 2^(failures-1))."""
    ceiling = min(cap_s, base_s * float(2 ** max(0, failures - 1)))
    return ceiling * random.uniform(0.5, 1.0)


def _earliest(frame: pl.DataFrame, default: int) -> int:
    value = frame["time_ms"].min()
    return int(value) if isinstance(value, int) else default


@dataclass(frozen=True)
class WatcherOptions:
    snapshot_interval_s: float = 60.0
    event_delay_s: float = 0.5  # a burst of events settles this long before the snapshot it asks for
    min_gap_s: float = 5.0  # at most one event-driven (light) snapshot per this interval
    keepalive_s: float = 30 * 60.0  # a listenKey lives 60 min
    income_history_days: int = 90  # Binance keeps income for 3 months: a new store starts that far back
    backoff_cap_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("snapshot_interval_s", "event_delay_s", "min_gap_s", "keepalive_s", "backoff_cap_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.snapshot_interval_s > 60:
            raise ValueError(
                f"snapshot_interval_s must be at most 60 (a snapshot a minute), got {self.snapshot_interval_s}"
            )
        if self.income_history_days < 1:
            raise ValueError(f"income_history_days must be at least 1, got {self.income_history_days}")


@dataclass
class RefreshResult:
    time_ms: int
    equity: Decimal
    positions: int
    new_income: int
    new_fills: int


ClientFactory = Callable[[Settings, Account, Mode | None], Coroutine[Any, Any, Any]]


async def _default_client(settings: Settings, account: Account, mode: Mode | None) -> Any:
    return await async_rest_client(settings, account, mode)


@dataclass
class AccountWatcher:
    settings: Settings
    account: Account
    clock: Clock = SYSTEM_CLOCK
    options: WatcherOptions = field(default_factory=WatcherOptions)
    mode: Mode | None = None
    client_factory: ClientFactory = _default_client

    def __post_init__(self) -> None:
        self.paths = DataPaths(self.settings.data_dir)
        self.store = AccountStore(self.paths, self.account.account_id)
        self._fills: list[dict[str, Any]] = []
        self._orders: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._last_refresh: float | None = None
        self._marks: dict[str, Decimal] = {}
        self._catch_up = False
        self.status: dict[str, Any] = {
            "account_id": self.account.account_id,
            "mode": self.mode or self.settings.execution.mode,
            "pid": os.getpid(),
            "started_ms": self.clock.now_ms(),
            "stream": "down",
            "stream_since_ms": None,
            "last_event_ms": None,
            "last_snapshot_ms": None,
            "equity": None,
            "last_error": None,
            "last_error_ms": None,
        }

    @property
    def account_id(self) -> str:
        return self.account.account_id

    # ----- REST snapshot -----------------------------------------------------------------------------------------

    async def refresh(self, client: Any, full: bool = True) -> RefreshResult:
        """One snapshot: balances and positions at mark and the stream's buffers; a `full` one also the marks of
        targeted symbols not held, new income and the fills it names. A light one (after stream events) costs 10
        request weight instead of 50+, so a busy execution window does not eat the IP's limit."""
        now = self.clock.now_ms()
        account, risk = await asyncio.gather(client.futures_account(version=3), client.futures_position_information())
        held = {p["symbol"] for p in risk if Decimal(str(p.get("positionAmt") or 0)) != 0}
        if full:
            target = latest_target(self.paths, self.account_id)
            wanted = set() if target is None else set(target.positions["symbol"].to_list()) - held
            self._marks = {}
            if wanted:
                self._marks = {
                    m["symbol"]: Decimal(str(m["markPrice"]))
                    for m in await client.futures_mark_price()
                    if m.get("symbol") in wanted
                }
        marks = {s: m for s, m in self._marks.items() if s not in held}
        new_income = await self._sync_income(client, now) if full else as_frame("income", [])
        fills, orders = self._fills, self._orders
        self._fills, self._orders = [], []
        added_fills = self.store.append("fills", as_frame("fills", fills))
        self.store.append("orders", as_frame("orders", orders))
        if full:
            added_fills += await self._sync_fills(client, new_income)
        snapshot = records.snapshot_row(account, now)
        positions = records.position_rows(risk, marks, now)
        self.store.append("positions", as_frame("positions", positions))
        self.store.append("snapshots", as_frame("snapshots", [snapshot]))
        if full:
            update_equity_curve(self.paths, self.account_id, now)
        self._last_refresh = self.clock.monotonic()
        self.status.update(last_snapshot_ms=now, equity=str(snapshot["equity"]))
        self._write_status()
        return RefreshResult(now, snapshot["equity"], len(held), new_income.height, added_fills)

    async def _sync_income(self, client: Any, now: int) -> pl.DataFrame:
        """Income from a while before the newest stored record (the store drops what it has) up to now."""
        since = self.store.last_time("income")
        start = since - INCOME_OVERLAP_MS if since is not None else now - self.options.income_history_days * DAY_MS
        rows: list[dict[str, Any]] = []
        while start <= now:
            end = min(start + INCOME_SPAN_MS - 1, now)
            page = await client.futures_income_history(startTime=start, endTime=end, limit=INCOME_PAGE)
            rows.extend(page)
            if len(page) >= INCOME_PAGE:
                last = int(page[-1]["time"])
                start = last if last > start else start + 1
            else:
                start = end + 1
        frame = as_frame("income", [records.income_row(r) for r in rows])
        known = self.store.read("income", _earliest(frame, now), None)
        fresh = frame.join(known, on=["tran_id", "income_type", "symbol"], how="anti")
        self.store.append("income", fresh)
        return fresh

    async def _sync_fills(self, client: Any, income: pl.DataFrame) -> int:
        """Fetch the fills named by new COMMISSION / REALIZED_PNL records that the store does not hold yet."""
        named = income.filter(pl.col("income_type").is_in(_TRADE_INCOME) & (pl.col("trade_id") != ""))
        if named.height == 0:
            return 0
        wanted = named.select("symbol", pl.col("trade_id").cast(pl.Int64)).unique()
        have = self.store.read("fills", _earliest(named, 0) - DAY_MS, None).select("symbol", "trade_id")
        missing = wanted.join(have, on=["symbol", "trade_id"], how="anti")
        rows: list[dict[str, Any]] = []
        for (symbol,), ids in missing.group_by("symbol"):
            todo = set(ids["trade_id"].to_list())
            from_id = min(todo)
            while todo:
                page = await client.futures_account_trades(symbol=symbol, fromId=from_id, limit=TRADES_PAGE)
                rows.extend(page)
                todo -= {int(t["id"]) for t in page}
                if len(page) < TRADES_PAGE:
                    break
                from_id = int(page[-1]["id"]) + 1
            if todo:
                log.warning(
                    "%s: %s fills named by income not returned by userTrades: %s",
                    self.account_id,
                    symbol,
                    sorted(todo)[:5],
                )
        return self.store.append("fills", as_frame("fills", [records.fill_row(r) for r in rows]))

    # ----- user data stream --------------------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> bool:
        """Take one user-stream message; False when the stream must be reopened (its listenKey expired)."""
        kind = event.get("e")
        if kind == "listenKeyExpired":
            return False
        if kind == "ORDER_TRADE_UPDATE":
            order = event["o"]
            self._orders.append(records.order_from_event(order))
            if order.get("x") == "TRADE":
                self._fills.append(records.fill_from_event(order))
        elif kind != "ACCOUNT_UPDATE":
            if kind == "error" or "error" in event:
                log.warning("%s: user stream reported %s", self.account_id, event)
            return True
        self.status["last_event_ms"] = self.clock.now_ms()
        self._wake.set()
        return True

    def _url(self, key: str) -> str:
        return self.settings.endpoints(self.mode).ws_url.rstrip("/") + f"/private/ws?listenKey={key}"

    async def _keepalive(self, client: Any, key: str, ws: Any) -> None:
        from binance.exceptions import BinanceAPIException

        while True:
            await self.clock.asleep(self.options.keepalive_s)
            try:
                await client.futures_stream_keepalive(listenKey=key)
            except BinanceAPIException as exc:
                log.warning("%s: listenKey keepalive refused (%s): reopening the stream", self.account_id, exc.code)
                await ws.close()
                return
            except Exception as exc:
                log.warning("%s: listenKey keepalive failed (%s), retrying next round", self.account_id, exc)

    async def stream(self, client: Any) -> None:
        """Follow the user data stream forever, reopening it (a fresh listenKey) after any failure."""
        failures = 0
        while True:
            opened = self.clock.monotonic()
            try:
                key = await client.futures_stream_get_listen_key()
                async with websockets.connect(self._url(key), open_timeout=10, max_size=2**22) as ws:
                    self._set_stream("up")
                    self._catch_up = True  # a full snapshot: whatever happened while the stream was down
                    self._wake.set()
                    keepalive = asyncio.create_task(self._keepalive(client, key, ws))
                    try:
                        async for raw in ws:
                            try:
                                keep = self.on_event(json.loads(raw))
                            except (ValueError, KeyError, TypeError) as exc:  # one bad message is not a dead stream
                                log.warning(
                                    "%s: unreadable user-stream message (%s): %.200r", self.account_id, exc, raw
                                )
                                continue
                            if not keep:
                                break
                    finally:
                        keepalive.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await keepalive
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error(f"user stream: {type(exc).__name__}: {exc}")
            self._set_stream("down")
            failures = 0 if self.clock.monotonic() - opened > _STABLE_S else failures + 1
            await self.clock.asleep(backoff_delay(failures, cap_s=self.options.backoff_cap_s))

    # ----- loops -------------------------------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` of the clock's time or until an event asks for a snapshot; True when woken."""
        if self._wake.is_set():
            return True
        wake = asyncio.create_task(self._wake.wait())
        sleep = asyncio.create_task(self.clock.asleep(seconds))
        try:
            await asyncio.wait({wake, sleep}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wake, sleep):
                task.cancel()
        return self._wake.is_set()

    async def snapshots(self, client: Any) -> None:
        """A full snapshot every `snapshot_interval_s`; a light one soon after stream events, at most every
        `min_gap_s`."""
        full_due = self.clock.monotonic()
        while True:
            self._wake.clear()
            full = self._catch_up or self.clock.monotonic() >= full_due
            self._catch_up = False
            try:
                await self.refresh(client, full=full)
                if full:
                    full_due = self.clock.monotonic() + self.options.snapshot_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error(f"snapshot: {type(exc).__name__}: {exc}")
                full_due = self.clock.monotonic() + self.options.snapshot_interval_s
                if getattr(exc, "status_code", None) in (418, 429):
                    # Over the weight limit: pressing on turns a 429 into an IP ban (418). Stay quiet a minute.
                    await self.clock.asleep(RATE_LIMIT_PAUSE_S)
            if await self._wait(max(0.0, full_due - self.clock.monotonic())):
                since = self.clock.monotonic() - (self._last_refresh or 0.0)
                await self.clock.asleep(max(self.options.event_delay_s, self.options.min_gap_s - since))

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until `stop` is set; then flush what the stream buffered and close the client."""
        client = await self._connect(stop)
        if client is None:
            return
        tasks = [asyncio.create_task(self.stream(client)), asyncio.create_task(self.snapshots(client))]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.store.append("fills", as_frame("fills", self._fills))
            self.store.append("orders", as_frame("orders", self._orders))
            self._fills, self._orders = [], []
            self._set_stream("stopped")
            await client.close_connection()

    async def _connect(self, stop: asyncio.Event) -> Any:
        failures = 0
        while not stop.is_set():
            try:
                return await self.client_factory(self.settings, self.account, self.mode)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._error(f"connect: {type(exc).__name__}: {exc}")
                await self.clock.asleep(backoff_delay(failures, cap_s=self.options.backoff_cap_s))
        return None

    def _set_stream(self, state: str) -> None:
        if self.status["stream"] != state:
            self.status.update(stream=state, stream_since_ms=self.clock.now_ms())
            self._write_status()

    def _error(self, message: str) -> None:
        log.warning("%s: %s", self.account_id, message)
        self.status.update(last_error=message, last_error_ms=self.clock.now_ms())
        self._write_status()

    def _write_status(self) -> None:
        self.status["updated_ms"] = self.clock.now_ms()
        self.store.write_status(self.status)


@dataclass
class Watcher:
    """Every usable account of the mode; accounts without credentials are logged and left out."""

    settings: Settings
    clock: Clock = SYSTEM_CLOCK
    options: WatcherOptions = field(default_factory=WatcherOptions)
    mode: Mode | None = None
    client_factory: ClientFactory = _default_client

    def __post_init__(self) -> None:
        accounts, skipped = self.settings.usable_accounts(self.mode)
        for account_id, reason in skipped.items():
            log.warning("not watching %s: %s", account_id, reason)
        self.accounts = [
            AccountWatcher(self.settings, a, self.clock, self.options, self.mode, self.client_factory) for a in accounts
        ]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(a.run(stop) for a in self.accounts))
