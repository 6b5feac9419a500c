"""`lsq sim serve`: run the Binance-compatible exchange simulator on one port (REST and WebSocket)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from aiohttp import web

from lsq.config import load_config
from lsq.paths import DataPaths
from simulator import memory
from simulator.app import IDLE_TIMEOUT_S, build_app, listening_message, serve
from simulator.clock import Clock
from simulator.faults import Faults
from simulator.history_files import market_cache_dir
from simulator.market import MarketLike
from simulator.ratelimit import RateLimits
from simulator.streams import StreamSettings
from simulator.user_stream import UserStreamHub

log = logging.getLogger(__name__)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("sim", help="the Binance USDⓈ-M exchange simulator")
    commands = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    p = commands.add_parser("serve", help="serve the simulated exchange (REST + WebSocket) on one port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765, 0 = any free port)")
    p.add_argument("--seed", type=int, default=7, help="market model and fault seed (default 7)")
    p.add_argument("--symbols", type=int, default=40, metavar="N", help="number of simulated symbols (default 40)")
    p.add_argument("--firehose", type=_positive_float, default=1.0, metavar="X", help="multiply every trade rate by X")
    p.add_argument("--replay", nargs="+", type=Path, metavar="FILE", help="replay recorded aggTrade files instead")
    p.add_argument("--replay-speed", type=_positive_float, default=1.0, metavar="S", help="replay S times real time")
    p.add_argument("--fresh", action="store_true", help="discard saved account state and start over")
    p.add_argument(
        "--rate-limit-multiplier", type=_positive_float, default=1.0, metavar="M", help="multiply Binance's REST limits"
    )
    p.add_argument("--drop-every", type=_positive_float, metavar="S", help="drop all stream connections every S s")
    p.add_argument("--stream-delay-ms", type=_non_negative_int, default=0, metavar="D", help="delay stream messages")
    p.add_argument(
        "--duplicate-share", type=_share, default=0.0, metavar="P", help="share of stream messages sent twice"
    )
    p.add_argument("--rest-error-share", type=_share, default=0.0, metavar="P", help="share of REST calls failed")
    p.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=IDLE_TIMEOUT_S,
        metavar="S",
        help=f"close connections without a complete request head after S s (default {IDLE_TIMEOUT_S:g})",
    )
    p.add_argument("--clock-skew-ms", type=int, default=0, metavar="S", help="skew the server clock by S ms")
    p.add_argument(
        "--history-cache",
        type=Path,
        metavar="DIR",
        help="keep every public-data file and daily summary built under DIR and serve them from there next time "
        "(generated market only)",
    )
    p.set_defaults(func=run_serve)


def _market(args: argparse.Namespace, clock: Clock) -> MarketLike:
    if args.replay:
        from simulator.replay import ReplayMarket

        missing = [str(p) for p in args.replay if not p.is_file()]
        if missing:
            raise ValueError(f"replay files not found: {missing}")
        return ReplayMarket.from_files(args.replay, speed=args.replay_speed, start_at_ms=clock.now_ms(), seed=args.seed)
    from simulator.instruments import select_instruments
    from simulator.market import Market

    return Market(select_instruments(args.symbols), seed=args.seed, rate_multiplier=args.firehose)


def run_serve(args: argparse.Namespace) -> int:
    from simulator.trading.engine import Exchange

    memory.limit_arenas()
    settings = load_config(args.config)
    clock = Clock(skew_ms=args.clock_skew_ms)
    faults = Faults(
        clock=clock,
        seed=args.seed,
        drop_every_s=args.drop_every,
        stream_delay_ms=args.stream_delay_ms,
        duplicate_share=args.duplicate_share,
        rest_error_share=args.rest_error_share,
    )
    limits = RateLimits().scaled(args.rate_limit_multiplier)
    try:
        market = _market(args, clock)
    except ValueError as exc:  # bad --symbols count, unreadable or malformed replay files
        print(f"lsq sim serve: {exc}", file=sys.stderr)
        return 2
    if args.history_cache is not None and args.replay:
        print(
            "lsq sim serve: --history-cache keeps the generated market's files; it cannot be used with --replay",
            file=sys.stderr,
        )
        return 2
    history_cache = (
        None if args.history_cache is None else market_cache_dir(args.history_cache, args.seed, args.firehose)
    )
    if history_cache is not None:
        market.keep_day_summaries(history_cache / "day-summaries")
    stream_settings = StreamSettings()
    users = UserStreamHub(clock, faults, stream_settings)
    accounts = settings.execution.accounts_for("mock")
    state_dir = DataPaths(settings.data_dir).simulator
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = Exchange(market, clock, state_dir, accounts, users.publish, fresh=args.fresh)

    def factory() -> web.Application:
        return build_app(
            market,
            clock,
            faults,
            engine,
            limits,
            accounts=accounts,
            stream_settings=stream_settings,
            user_hub=users,
            history_cache=history_cache,
        )

    def ready(port: int) -> None:
        print(listening_message(args.host, port), flush=True)

    try:
        asyncio.run(serve(args.host, args.port, factory, ready=ready, idle_timeout_s=args.idle_timeout))
    except OSError as exc:
        print(f"lsq sim serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    log.info("simulator stopped")
    return 0
