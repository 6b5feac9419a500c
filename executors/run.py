"""One account's rebalance toward one target file: the function both `lsq execute` and the Dagster run call.

reconcile -> contract settings -> limits, band, plan -> schedule slices (catch-up from the positions actually
reached, reductions first, halt switch read before every child) -> sweeps until within one step -> report.

Dry runs compute, journal and return the plan and send no order request (no order, cancel or setting change).
"""

from __future__ import annotations

import fcntl
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from executors import planner as p
from executors.contracts import apply_contract_settings
from executors.journal import Journal, journal_path
from executors.reconcile import read_positions, reconcile, sync_fills
from executors.router import OrderRouter, RouterStopped, SendResult, parse_rate_limits
from executors.safety import check_drawdown, read_halt, require_live_confirmation
from executors.schedules import Schedule, load_profiles, market_schedule, twap_schedule, vwap_schedule
from lsq.clock import SYSTEM_CLOCK, Clock
from lsq.config import AlgorithmSettings, Settings
from lsq.exchange import RetryingClient, account_client
from lsq.exchange.rules import ZERO, Bracket, RulesProvider, SymbolRules
from lsq.exchange.views import parse_account
from lsq.paths import DataPaths
from lsq.targets import TargetFile, TargetFileError, latest_targets, plain, read_targets

log = logging.getLogger(__name__)
MAX_SWEEPS = 3
MARGIN_SHRINKS = 2


@dataclass
class ExecutionReport:
    """What one run did. Money in USDT; slippage is a cost (positive = worse than the decision price)."""

    account_id: str
    run_id: str
    status: str  # completed | dry_run | halted | superseded | stale | no_targets | stopped | busy
    algorithm: str
    dry_run: bool
    window: str | None = None
    target_file: str | None = None
    started_ms: int = 0
    finished_ms: int = 0
    first_ack_ms: int | None = None
    orders_sent: int = 0  # order requests that left for the exchange (POST /fapi/v1/order, retries included)
    orders_filled: int = 0  # child orders with any fill
    filled_notional: float = 0.0
    fees: float = 0.0
    slippage_usdt: float = 0.0
    slippage_bps: float = 0.0
    residual_notional: float = 0.0  # sum over symbols of |target - final| x price
    residual: dict[str, str] = field(default_factory=dict)  # symbol -> target - final, where not zero
    plan: list[dict[str, str]] = field(default_factory=list)  # parents: symbol, position_side, start, target
    orders: list[dict[str, str]] = field(default_factory=list)  # dry run: the whole move as market orders, split
    skipped: dict[str, str] = field(default_factory=dict)
    foreign_orders: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metadata(self) -> dict[str, float | int | str]:
        """The scalar figures, for Dagster materialization metadata."""
        keys = (
            "status", "algorithm", "window", "orders_sent", "orders_filled", "filled_notional", "fees",
            "slippage_usdt", "slippage_bps", "residual_notional",
        )  # fmt: skip
        out: dict[str, float | int | str] = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        out["skipped"] = len(self.skipped)
        return out


@dataclass
class _Run:
    settings: Settings
    account_id: str
    target: TargetFile
    clock: Clock
    client: Any
    journal: Journal
    router: OrderRouter
    paths: DataPaths
    provider: RulesProvider
    rules: dict[str, SymbolRules]
    report: ExecutionReport
    dual_side: bool = False
    should_stop: Callable[[], bool] | None = None
    seq: int = 0
    resting: list[tuple[str, str]] = field(default_factory=list)  # (symbol, client id) of passive orders
    countdown: set[str] = field(default_factory=set)
    countdown_ok: bool = True


def run_account(
    settings: Settings,
    account_id: str,
    targets: Path | TargetFile | None = None,
    clock: Clock = SYSTEM_CLOCK,
    *,
    algorithm: str | None = None,
    dry_run: bool | None = None,
    confirm_live: Collection[str] | None = None,
    enforce_max_age: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> ExecutionReport:
    """Trade `account_id` toward `targets` (a file, a parsed file, or None for the account's latest file).

    `algorithm` overrides the configured one (market | twap | vwap); `dry_run` overrides execution.dry_run;
    `confirm_live` names the accounts confirmed for live trading (also $LSQ_CONFIRM_LIVE); `enforce_max_age` skips
    targets older than execution.executor.max_target_age_seconds (automatic runs); `should_stop` is asked before
    every slice. Raises LiveNotConfirmed, TargetFileError or ValueError (unknown account) before any request.
    """
    cfg = settings.execution.executor
    dry = settings.execution.dry_run if dry_run is None else dry_run
    algo = cfg.algorithm_for(account_id)
    if algorithm is not None:
        if algorithm not in ("market", "twap", "vwap"):
            raise ValueError(f"algorithm {algorithm!r} must be one of market, twap, vwap")
        algo = algo.model_copy(update={"name": algorithm})
    require_live_confirmation(settings, account_id, dry, confirm_live)
    paths = DataPaths(settings.data_dir)
    started = clock.now_ms()
    run_id = f"{started}-{uuid.uuid4().hex[:8]}"
    report = ExecutionReport(account_id, run_id, "completed", algo.name, dry, started_ms=started)

    if targets is None:
        found = latest_targets(paths, account_id)
        if found is None:
            report.status = "no_targets"
            report.notes.append(f"no target file for {account_id} under {paths.positions}")
            report.finished_ms = clock.now_ms()
            return report
        targets = found
    target = targets if isinstance(targets, TargetFile) else read_targets(targets)
    if target.account_id != account_id:
        raise TargetFileError(f"target file {target.path} is for account {target.account_id!r}, not {account_id!r}")
    report.window, report.target_file = target.label, str(target.path) if target.path else None
    age_s = (started - target.window_end_ms) / 1000
    if enforce_max_age and age_s > cfg.max_target_age_seconds:
        report.status = "stale"
        report.notes.append(f"target is {age_s:.0f} s old (max_target_age_seconds {cfg.max_target_age_seconds:g})")
        report.finished_ms = clock.now_ms()
        return report

    raw = account_client(settings, account_id)
    raw.REQUEST_TIMEOUT = cfg.request_timeout_seconds
    client = RetryingClient(raw, clock)
    lock_path = paths.execution(account_id) / "run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        report.status = "busy"
        report.notes.append(f"another run of {account_id} holds {lock_path}: runs of one account go one at a time")
        report.finished_ms = clock.now_ms()
        return report
    journal = Journal(journal_path(paths, account_id))
    try:
        journal.start_run(run_id, target.window_ms, report.target_file or "", algo.name, dry, started)
        router: OrderRouter | None = None
        try:
            provider = RulesProvider(client, clock)
            limits = parse_rate_limits(provider.rate_limits())
            router = OrderRouter(account_id, client, journal, clock, run_id, target.window_ms, limits)
            rules = provider.rules()
            run = _Run(settings, account_id, target, clock, client, journal, router, paths, provider, rules, report)
            run.should_stop = should_stop
            try:
                _execute(run, algo)
            except RouterStopped as exc:
                report.status = "stopped"
                report.notes.append(str(exc))
            finally:
                if run.countdown and not dry:
                    _cancel_countdowns(run)
        except Exception as exc:  # journaled as failed, then raised: the caller (Dagster, the CLI) shows it
            report.status = "failed"
            report.notes.append(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if router is not None:
                report.orders_sent = router.order_requests
                report.first_ack_ms = router.first_ack_ms
            report.finished_ms = clock.now_ms()
            journal.finish_run(run_id, report.status, report.as_dict(), report.finished_ms)
    finally:
        journal.close()
        lock.close()
    return report


def _execute(run: _Run, algo: AlgorithmSettings) -> None:
    report, clock = run.report, run.clock
    dry = report.dry_run
    halt = read_halt(run.paths, run.account_id)
    if halt is not None and halt.mode == "halt":
        report.status = "halted"
        report.notes.append(f"halted: {halt.reason}")
        if not dry:
            reconcile(run.client, run.journal, run.router, clock.now_ms(), dry_run=False)  # cancels our orders
        return
    state = reconcile(run.client, run.journal, run.router, clock.now_ms(), dry_run=dry)
    report.foreign_orders = [f"{o.symbol} {o.side} {o.orig_qty} ({o.client_order_id})" for o in state.foreign]
    if state.cancelled:
        report.notes.append(f"cancelled {len(state.cancelled)} open orders of earlier runs")
    if state.resolved:
        report.notes.append(f"resolved {len(state.resolved)} orders an earlier run left in doubt")
    if state.new_fills:
        report.notes.append(f"journaled {state.new_fills} fills of earlier runs")
    account_raw = run.client.futures_account()
    equity = parse_account(account_raw).equity
    cfg = run.settings.execution.executor
    if check_drawdown(run.paths, run.account_id, equity, cfg.max_drawdown, clock.now_ms()) is not None:
        report.status = "halted"
        report.notes.append("halted by the drawdown limit")
        return
    marks = _marks(run)
    current = state.positions
    net_targets, notes = p.universe_targets(run.target.quantities(), {s for s, _ in current}, run.rules)
    report.skipped.update(notes)
    trade_symbols = {s for s, t in net_targets.items() if t != 0} | {s for s, _ in current}
    contracts = apply_contract_settings(
        run.client, run.settings.execution.contract_settings, trade_symbols, account_raw, dry_run=dry
    )
    run.dual_side = run.router.dual_side = contracts.dual_side
    report.skipped.update(contracts.skipped)
    report.notes.extend(contracts.notes + contracts.changes)
    limits = cfg.limits
    limited = p.apply_limits(
        net_targets,
        p.net_of(current),
        marks,
        equity,
        run.rules,
        _brackets(run),
        p.Limits(
            _dec(limits.max_order_notional),
            _dec(limits.max_gross_leverage),
            _dec(limits.max_symbol_share),
            run.settings.execution.contract_settings.leverage,
        ),
    )
    report.notes.extend(f"{k}: {v}" for k, v in limited.notes.items())
    desired = p.leg_targets(limited.targets, run.dual_side)
    for key in current:  # legs held on a side the plan does not name (mode changed) close too
        desired.setdefault(key, ZERO)
    for symbol in contracts.skipped:
        for key in [k for k in desired if k[0] == symbol]:
            desired[key] = current.get(key, ZERO)
    desired, in_band = p.banded(desired, current, marks, Decimal(str(cfg.no_trade_band_usdt)))
    for symbol in in_band:
        report.skipped.setdefault(symbol, f"inside the no-trade band ({cfg.no_trade_band_usdt:g} USDT)")
    parents = {k: d for k, d in desired.items() if d != current.get(k, ZERO)}
    decision = run.target.decision_prices()
    run.journal.add_parents(
        report.run_id,
        [(s, ps, current.get((s, ps), ZERO), d, decision.get(s, marks.get(s, ZERO))) for (s, ps), d in parents.items()],
    )
    report.plan = [
        {"symbol": s, "position_side": ps, "start": plain(current.get((s, ps), ZERO)), "target": plain(d)}
        for (s, ps), d in sorted(parents.items())
    ]
    if dry:
        orders, skipped = p.plan_moves(current, desired, run.rules, marks)
        cap = _dec(limits.max_order_notional)
        pieces = [x for o in orders for x in p.split_order(o, run.rules[o.symbol], marks[o.symbol], cap)]
        report.orders = [_order_view(o) for o in pieces]
        report.skipped.update(skipped)
        report.status = "dry_run"
        return
    if not parents:
        _finish(run, net_targets, marks, current)
        return
    schedule = _schedule(run, algo, parents)
    run.seq = run.journal.next_seq(run.target.window_ms)
    start = {k: current.get(k, ZERO) for k in desired}
    marks = _run_schedule(run, schedule, start, desired, marks, passive=algo.name == "twap" and algo.twap.passive)
    _finish(run, net_targets, marks, read_positions(run.client))  # also after a halt or a newer target


def _run_schedule(
    run: _Run,
    schedule: Schedule,
    start: dict[p.Key, Decimal],
    desired: dict[p.Key, Decimal],
    marks: dict[str, Decimal],
    *,
    passive: bool,
) -> dict[str, Decimal]:
    """The slices, then market sweeps until nothing is left to order; returns the latest marks."""
    clock = run.clock
    for index, at_ms in enumerate(schedule.times_ms):
        wait = (at_ms - clock.now_ms()) / 1000
        if wait > 0:
            clock.sleep(wait)
        if _interrupted(run) or (index > 0 and _drawdown_halt(run)):
            return marks
        _cancel_resting(run)
        if index > 0:  # limits and MIN_NOTIONAL checks follow the market through the schedule
            marks = _marks(run)
        positions = read_positions(run.client)
        last = index == len(schedule) - 1
        step_target = {
            k: d if last else start[k] + (d - start[k]) * Decimal(str(schedule.cum(k[0], index)))
            for k, d in desired.items()
        }
        if not _slice(run, positions, step_target, marks, passive=passive and not last):
            return marks
    for _ in range(MAX_SWEEPS):
        if _interrupted(run):
            return marks
        _cancel_resting(run)
        positions = read_positions(run.client)
        orders, _ = p.plan_moves(positions, desired, run.rules, marks)
        if not orders or not _slice(run, positions, desired, marks, passive=False):
            break
    return marks


def _marks(run: _Run) -> dict[str, Decimal]:
    return {m["symbol"]: Decimal(m["markPrice"]) for m in run.client.futures_mark_price()}


def _drawdown_halt(run: _Run) -> bool:
    """Checked before every slice: a schedule does not keep trading through the drawdown limit."""
    equity = parse_account(run.client.futures_account()).equity
    cfg = run.settings.execution.executor
    if check_drawdown(run.paths, run.account_id, equity, cfg.max_drawdown, run.clock.now_ms()) is None:
        return False
    run.report.status = "halted"
    run.report.notes.append("halted by the drawdown limit during the run")
    _cancel_resting(run)
    return True


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _brackets(run: _Run) -> dict[str, list[Bracket]]:
    try:
        return run.provider.brackets()
    except Exception as exc:  # an exchange without the endpoint: the bracket limit cannot be checked
        run.report.notes.append(f"leverage brackets unavailable ({type(exc).__name__}): bracket limit not applied")
        return {}


def _schedule(run: _Run, algo: AlgorithmSettings, parents: dict[p.Key, Decimal]) -> Schedule:
    now = run.clock.now_ms()
    if algo.name == "market":
        return market_schedule(now)
    if algo.name == "twap":
        return twap_schedule(now, algo.twap.horizon_seconds, algo.twap.interval_seconds)
    symbols = {s for s, _ in parents}
    profiles = load_profiles(run.paths, symbols, now, algo.vwap.lookback_days)
    missing = sorted(symbols - set(profiles))
    if missing:
        run.report.notes.append(f"vwap: no stored volume for {len(missing)} symbols: equal slices for them")
    return vwap_schedule(now, algo.vwap.horizon_seconds, algo.vwap.interval_seconds, profiles)


def _interrupted(run: _Run) -> bool:
    """A newer target file, or the caller asking to stop, ends the schedule at this slice."""
    if run.should_stop is not None and run.should_stop():
        run.report.status = "stopped"
        return True
    latest = latest_targets(run.paths, run.account_id)
    if run.target.path is not None and latest is not None and latest.name > run.target.path.name:
        run.report.status = "superseded"
        run.report.notes.append(f"superseded by {latest.name}")
        _cancel_resting(run)
        return True
    return False


def _slice(
    run: _Run, positions: dict[p.Key, Decimal], step_target: dict[p.Key, Decimal], marks: dict[str, Decimal], *,
    passive: bool,
) -> bool:  # fmt: skip
    """Send one slice's children; False when the run must stop (halt)."""
    orders, _ = p.plan_moves(positions, step_target, run.rules, marks, market=not passive)
    seq = run.seq
    run.seq += 1
    max_notional = _dec(run.settings.execution.executor.limits.max_order_notional)
    books: dict[str, tuple[Decimal, Decimal]] = {}
    price_match = run.settings.execution.executor.algorithm_for(run.account_id).twap.price_match
    halt = read_halt(run.paths, run.account_id)
    pieces: list[p.ChildOrder] = []
    for order in orders:
        if halt is not None and halt.mode == "reduce_only" and not order.reduce_only:
            run.report.skipped.setdefault(order.symbol, "reduce-only switch: increase not sent")
            continue
        if passive:
            order = _passive(run, order, marks, books, price_match)
        pieces += p.split_order(order, run.rules[order.symbol], marks[order.symbol], max_notional)
    size = 5 if run.settings.execution.executor.batch_orders else 1
    for leg in (p.REDUCE, p.OPEN):  # every reduction is acknowledged before the first open is sent
        group = [x for x in pieces if x.leg == leg]
        for start in range(0, len(group), size):
            halt = read_halt(run.paths, run.account_id)  # before every request: a halt stops the next order
            if halt is not None and halt.mode == "halt":
                run.report.status = "halted"
                run.report.notes.append(f"halted during the run: {halt.reason}")
                _cancel_resting(run)
                return False
            chunk = [x for x in group[start : start + size] if halt is None or x.reduce_only]
            for piece, result in zip(chunk, _place(run, chunk, seq), strict=True):
                _handled(run, piece, result, seq, marks[piece.symbol])
    if run.resting:
        _arm_countdown(run)
    return True


def _passive(
    run: _Run,
    order: p.ChildOrder,
    marks: dict[str, Decimal],
    books: dict[str, tuple[Decimal, Decimal]],
    price_match: str | None,
) -> p.ChildOrder:
    """The child as a post-only limit at the touch (bid for buys, ask for sells), on the LOT_SIZE grid; with
    `price_match` the exchange prices it (no book request, no stale touch)."""
    rules = run.rules[order.symbol]
    if price_match is not None:
        return replace(order, market=False, price=None, price_match=price_match)
    if order.symbol not in books:
        try:
            book = run.client.futures_orderbook_ticker(symbol=order.symbol)
            books[order.symbol] = (Decimal(book["bidPrice"]), Decimal(book["askPrice"]))
        except Exception:
            books[order.symbol] = (ZERO, ZERO)
    bid, ask = books[order.symbol]
    touch = bid if order.side == "BUY" else ask
    if touch <= 0:  # no book view: this slice goes at market, on the market grid
        grid = rules.ceil_qty if order.reduce_only and order.position_side == "BOTH" else rules.floor_qty
        return replace(order, quantity=grid(order.quantity, True), market=True)
    price = rules.clamp_limit_price(touch, marks[order.symbol], order.side)
    return replace(order, market=False, price=price)


def _with_id(order: p.ChildOrder, attempt: int) -> p.ChildOrder:
    """The child as the router sends it: the leg names the position side, each margin retry its own part."""
    return replace(order, leg=order.leg + order.position_side[0], part=order.part + 10 * attempt)


def _place(run: _Run, chunk: list[p.ChildOrder], seq: int) -> list[SendResult]:
    if not chunk:
        return []
    if len(chunk) == 1:
        return [run.router.place(_with_id(chunk[0], 0), seq)]
    return run.router.place_batch([_with_id(x, 0) for x in chunk], seq)


def _handled(run: _Run, order: p.ChildOrder, result: SendResult, seq: int, mark: Decimal) -> None:
    """Record a child's outcome; on -2019 (margin) shrink it by half at most twice, then skip and report."""
    rules = run.rules[order.symbol]
    attempt = 0
    while True:
        if result.order is not None and not order.market and result.order.is_open:
            run.resting.append((order.symbol, result.client_id))
        if result.code != -2019:
            if result.status == "REJECTED" and result.code != -5022:  # a refused post-only child is caught up later
                run.report.skipped[order.symbol] = f"rejected {result.code}: {result.message}"
            return
        smaller = rules.floor_qty(order.quantity / 2, order.market)
        if smaller * (order.price or mark) < rules.min_notional and not order.reduce_only:
            smaller = ZERO
        attempt += 1
        if smaller <= 0 or attempt > MARGIN_SHRINKS:
            run.report.skipped[order.symbol] = "margin insufficient (-2019): skipped after shrinking"
            return
        run.report.notes.append(f"{order.symbol}: margin insufficient for {order.quantity}, trying {smaller}")
        order = replace(order, quantity=smaller)
        result = run.router.place(_with_id(order, attempt), seq)


def _cancel_resting(run: _Run) -> None:
    for symbol, client_id in run.resting:
        run.router.cancel(symbol, client_id)
    run.resting.clear()


def _arm_countdown(run: _Run) -> None:
    """Dead-man switch: the exchange cancels our resting orders if this process stops refreshing the countdown."""
    if not run.countdown_ok:
        return
    ms = int(run.settings.execution.executor.dead_man_seconds * 1000)
    for symbol in sorted({s for s, _ in run.resting}):
        try:
            run.client.futures_countdown_cancel_all(symbol=symbol, countdownTime=ms)
            run.countdown.add(symbol)
        except Exception as exc:
            run.countdown_ok = False
            run.report.notes.append(f"countdownCancelAll unavailable ({exc}): no dead-man switch")
            return


def _cancel_countdowns(run: _Run) -> None:
    for symbol in sorted(run.countdown):
        try:
            run.client.futures_countdown_cancel_all(symbol=symbol, countdownTime=0)
        except Exception as exc:
            log.warning("could not clear the countdown of %s: %s", symbol, exc)
    run.countdown.clear()


def _order_view(o: p.ChildOrder) -> dict[str, str]:
    return {
        "symbol": o.symbol,
        "position_side": o.position_side,
        "side": o.side,
        "quantity": plain(o.quantity),
        "reduce_only": str(o.reduce_only).lower(),
        "type": "MARKET" if o.market else "LIMIT",
    }


def _finish(run: _Run, wanted: dict[str, Decimal], marks: dict[str, Decimal], final: dict[p.Key, Decimal]) -> None:
    """Residuals against the target file (after the universe rule; limits and the band show up here, with their
    reasons in notes and skipped), and fills, fees and slippage of this run's orders against the decision price."""
    report = run.report
    held = p.net_of(final)
    residual_notional = ZERO
    for symbol in sorted(set(wanted) | set(held)):
        gap = wanted.get(symbol, ZERO) - held.get(symbol, ZERO)
        if gap != 0:
            report.residual[symbol] = plain(gap)
            residual_notional += abs(gap) * marks.get(symbol, ZERO)
    report.residual_notional = float(residual_notional)
    children = run.journal.children(run_id=report.run_id)
    sync_fills(run.client, run.journal, run.clock.now_ms(), {c.symbol for c in children})
    decision = run.target.decision_prices()
    notional = fees = slip = ZERO
    filled_orders = set()
    for f in run.journal.fills_of_run(report.run_id):
        qty, price = Decimal(f["qty"]), Decimal(f["price"])
        filled_orders.add(f["client_id"])
        notional += qty * price
        fees += Decimal(f["commission"])
        ref = decision.get(f["symbol"]) or marks.get(f["symbol"], price)
        slip += (price - ref) * qty * (1 if f["side"] == "BUY" else -1)
    report.orders_filled = len(filled_orders)
    report.filled_notional = float(notional)
    report.fees = float(fees)
    report.slippage_usdt = float(slip)
    report.slippage_bps = float(slip / notional * 10_000) if notional else 0.0
