"""Simulator throughput, measured against `lsq sim serve` running in its own process (its own core).

1. aggTrade messages/s streamed to ONE client on /market/stream: a recorded day of several symbols is replayed ever
   faster (`--replay-speed`, the firehose) until the client falls behind (its lag grows, then the server cuts it off as
   a slow client, as Binance does). One client decodes every message and checks ids; a cheaper one only counts.
2. REST round trips/s: python-binance (sync, one connection) and raw aiohttp (keep-alive, concurrent requests).
3. Seconds to fetch one symbol-day of aggTrades over REST with python-binance (fromId paging, limit 1000) with the
   rate limit raised.
4. The server's resident memory (40 symbols, as `make run` starts it): after start, after its streams and REST
   figures, and after a day of every symbol's 1m klines over REST.

Run: .venv/bin/python benchmarks/bench_simulator.py [--seconds 5] [--speeds 300 1000 2000 3000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from lsq.config import PROJECT_ROOT, load_config
from lsq.exchange import rest_client
from lsq.timelabels import DAY_MS
from simulator.history_files import aggtrades_csv
from simulator.instruments import select_instruments
from simulator.market import Market

REPLAY_SYMBOLS = 12


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> int:
    """Resident set size of a process in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


class Server:
    """`lsq sim serve` in a subprocess on a free port."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        env = {**os.environ, "LSQ_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0", "--fresh", *args]
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("simulator listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.rest_url = line.split()[3]
        self.ws_url = self.rest_url.replace("http://", "ws://")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def write_recording(directory: Path) -> tuple[list[Path], int]:
    """Yesterday's generated trades of REPLAY_SYMBOLS symbols as public-data CSV files; returns (files, trades)."""
    market = Market(select_instruments(REPLAY_SYMBOLS), seed=7)
    day_ms = (time.time_ns() // 1_000_000 // DAY_MS - 1) * DAY_MS
    day = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
    files, trades = [], 0
    for symbol in market.instruments:
        text = aggtrades_csv(market, symbol, day_ms)
        trades += text.count("\n") - 1
        path = directory / f"{symbol}-aggTrades-{day}.csv"
        path.write_text(text)
        files.append(path)
    return files, trades


async def stream_rate(ws_url: str, symbols: list[str], seconds: float, parse: bool) -> tuple[int, int, float, float]:
    """One combined-stream client for `seconds`: (messages, id gaps, seconds measured, lag behind E at the end, ms).

    `parse` decodes every message and checks ids are contiguous per symbol; otherwise frames are only counted (the
    lag is then read from the last frame)."""
    streams = "/".join(f"{s.lower()}@aggTrade" for s in symbols)
    last: dict[str, int] = {}
    count = gaps = 0
    text = ""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{ws_url}/market/stream?streams={streams}") as ws,
    ):
        await asyncio.wait_for(ws.receive(), 30)  # first message: measurement starts warm
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"disconnected ({msg.type.name})")
            count += 1
            text = msg.data
            if parse:
                data = json.loads(text)["data"]
                symbol, agg_id = data["s"], data["a"]
                if symbol in last and agg_id != last[symbol] + 1:
                    gaps += 1
                last[symbol] = agg_id
        lag = time.time() * 1000 - json.loads(text)["data"]["E"]
        return count, gaps, time.monotonic() - started, lag


def bench_streams(work: Path, seconds: float, speeds: list[int]) -> None:
    files, trades = write_recording(work)
    symbols = [f.name.split("-")[0] for f in files]
    print(f"\n[stream] replaying {len(files)} symbols, {trades:,} aggTrades/day ({trades / 86400:.1f}/s at speed 1)")
    print(f"{'speed':>7} {'client':>7} {'messages/s':>11} {'gaps':>5} {'lag ms':>7} {'server CPU':>11}")
    best = 0.0
    for speed in speeds:
        for parse in (True, False):
            client = "parses" if parse else "counts"
            server = Server(
                work / f"state-{speed}-{client}", "--replay", *map(str, files), "--replay-speed", str(speed)
            )
            try:
                time.sleep(0.5)
                cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
                try:
                    count, gaps, took, lag = asyncio.run(stream_rate(server.ws_url, symbols, seconds, parse))
                except (RuntimeError, TimeoutError) as exc:
                    print(f"{speed:>7} {client:>7}  client fell behind and was {exc} as a slow client")
                    continue
                cpu = (cpu_seconds(server.proc.pid) - cpu0) / (time.monotonic() - t0)
            finally:
                server.stop()
            rate = count / took
            if lag < 1000:
                best = max(best, rate)
            print(f"{speed:>7} {client:>7} {rate:>11,.0f} {gaps if parse else '-':>5} {lag:>7,.0f} {cpu:>10.0%}")
    print(f"[stream] best rate one client kept up with (lag < 1 s): {best:,.0f} aggTrade messages/s")


def bench_rest(work: Path, seconds: float) -> None:
    market_symbols = {i.symbol for i in select_instruments(40)}
    server = Server(work / "state-rest", "--symbols", "40", "--rate-limit-multiplier", "1000")
    try:
        base = load_config()
        endpoints = base.binance.mock.model_copy(update={"rest_url": server.rest_url, "ws_url": server.ws_url})
        settings = base.model_copy(update={"binance": base.binance.model_copy(update={"mock": endpoints})})
        client = rest_client(settings)
        time.sleep(2)  # the streams' first day is generated on demand; let start-up settle
        started_rss = rss_mb(server.proc.pid)
        n, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.futures_time()
            n += 1
        print(f"\n[rest] python-binance futures_time, 1 connection: {n / seconds:,.0f} round trips/s")

        async def hammer(concurrency: int) -> int:
            done = 0
            stop = time.monotonic() + seconds

            async def worker(session: aiohttp.ClientSession) -> None:
                nonlocal done
                while time.monotonic() < stop:
                    async with session.get(f"{server.rest_url}/fapi/v1/time") as response:
                        await response.read()
                    done += 1

            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return done

        for concurrency in (1, 16):
            done = asyncio.run(hammer(concurrency))
            print(f"[rest] aiohttp GET /fapi/v1/time, {concurrency} concurrent: {done / seconds:,.0f} round trips/s")

        day_ms = (time.time_ns() // 1_000_000 // DAY_MS - 1) * DAY_MS
        started = time.monotonic()
        first = client.futures_aggregate_trades(symbol="BTCUSDT", startTime=day_ms, endTime=day_ms + 3_600_000 - 1)
        rows, next_id, requests = len(first), first[0]["a"] + len(first), 1
        while True:
            page = client.futures_aggregate_trades(symbol="BTCUSDT", fromId=next_id, limit=1000)
            requests += 1
            page = [t for t in page if t["T"] < day_ms + DAY_MS]
            rows += len(page)
            if len(page) < 1000:
                break
            next_id = page[-1]["a"] + 1
        took = time.monotonic() - started
        print(
            f"[rest] one symbol-day of BTCUSDT aggTrades over REST: {rows:,} trades in {requests} requests, "
            f"{took:.1f} s ({rows / took:,.0f} trades/s)"
        )
        after_rest = rss_mb(server.proc.pid)
        symbols = [s["symbol"] for s in client.futures_exchange_info()["symbols"] if s["status"] == "TRADING"]
        for symbol in symbols:
            if symbol in market_symbols:
                client.futures_klines(symbol=symbol, interval="1m", startTime=day_ms, limit=1440)
        print(
            f"[memory] lsq sim serve --symbols 40: {started_rss} MB after start, {after_rest} MB after the REST "
            f"figures, {rss_mb(server.proc.pid)} MB after a day of 1m klines of every symbol"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per figure")
    parser.add_argument("--speeds", type=int, nargs="+", default=[300, 1000, 2000, 3000, 5000])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_streams(Path(tmp), args.seconds, args.speeds)
        bench_rest(Path(tmp), args.seconds)


if __name__ == "__main__":
    main()
