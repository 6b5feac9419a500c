"""Collector benchmarks: frame handling rate on one core, end-to-end ingest from the simulator's firehose with the
store checked against the exchange afterwards, collector RSS, and the delay from a window's end to its marker.

    .venv/bin/python benchmarks/bench_collector.py [--symbols 40] [--firehose 20] [--seconds 20]

The simulator runs as a separate process (`lsq sim serve`), so the collector has its own core; its clock is skewed
so that a 5-minute window ends a few seconds into the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from collectors.connection import StreamConnection  # noqa: E402
from collectors.daemon import Collector, SymbolBook  # noqa: E402
from lsq.config import load_config  # noqa: E402
from lsq.paths import DataPaths  # noqa: E402
from lsq.timelabels import WINDOW_MS, window_start  # noqa: E402
from lsq.tradestore import TradeStore  # noqa: E402
from simulator.instruments import select_instruments  # noqa: E402

MEMORY_SYMBOLS = 200


def bench_frame_handling(n_symbols: int = 200, n_frames: int = 300_000) -> None:
    """Collector.on_frame alone (parse, dedupe, gap check, columnar append) on pre-built frames."""
    settings = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": Path(tmp)})})
        collector = Collector(settings)
        conn = StreamConnection("bench", "ws://127.0.0.1:1", collector)
        symbols = [f"S{i:03d}USDT" for i in range(n_symbols)]
        for s in symbols:
            book = SymbolBook(s, 0)
            book.anchored = True
            book.conn = conn
            collector.books[s] = book
        t0 = 1_795_489_000_000
        frames = []
        for i in range(n_frames):
            s = symbols[i % n_symbols]
            a = i // n_symbols + 1
            frames.append(
                f'{{"stream":"{s.lower()}@aggTrade","data":{{"e":"aggTrade","E":{t0 + i},"s":"{s}","a":{a},'
                f'"p":"{30000 + i % 500}.{i % 100:02d}","q":"0.{i % 1000:03d}","f":{a * 2},"l":{a * 2 + 1},'
                f'"T":{t0 + i},"m":{"true" if i % 2 else "false"}}}}}'
            )
        start = time.perf_counter()
        for f in frames:
            collector.on_frame(conn, f)
        elapsed = time.perf_counter() - start
        assert collector.stream_trades == n_frames and collector.duplicates == 0 and collector.gaps_opened == 0
        flush_start = time.perf_counter()
        asyncio.run(collector.flush())
        flush_s = time.perf_counter() - flush_start
        stored = sum(TradeStore(DataPaths(Path(tmp))).scan(s, 0, 1 << 62).collect().height for s in symbols)
        assert stored == n_frames
        print(f"frame handling: {n_frames / elapsed:,.0f} frames/s on one core ({n_symbols} symbols)")
        print(f"flush of {n_frames:,} trades over {n_symbols} symbols: {flush_s:.2f} s")


BLAST_SERVER = r"""
import asyncio, json, sys
from websockets.asyncio.server import serve

def frame(payload: bytes) -> bytes:
    n = len(payload)
    head = bytes((0x81, n)) if n < 126 else bytes((0x81, 126)) + n.to_bytes(2, "big")
    return head + payload

n, symbols, t0 = int(sys.argv[1]), int(sys.argv[2]), 1_795_489_000_000
blob = bytearray()
for i in range(n):
    s, a = f"S{i % symbols:03d}USDT", i // symbols + 1
    body = (f'{{"stream":"{s.lower()}@aggTrade","data":{{"e":"aggTrade","E":{t0 + i},"s":"{s}","a":{a},'
            f'"p":"{30000 + i % 500}.{i % 100:02d}","q":"0.{i % 1000:03d}","f":{a * 2},"l":{a * 2 + 1},'
            f'"T":{t0 + i},"m":{"true" if i % 2 else "false"}}}}}')
    blob += frame(body.encode())

async def handler(ws):
    async for message in ws:
        request = json.loads(message)
        await ws.send(json.dumps({"result": None, "id": request["id"]}))
        if request["method"] == "SUBSCRIBE" and request["params"]:
            for i in range(0, len(blob), 1 << 20):
                ws.transport.write(bytes(blob[i:i + (1 << 20)]))
                await ws.drain() if hasattr(ws, "drain") else await asyncio.sleep(0)

async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


def bench_socket_ingest(n_frames: int = 400_000, n_symbols: int = 200) -> None:
    """Frames over a real WebSocket from another process, as fast as TCP carries them, into the collector."""
    server = subprocess.Popen(
        [sys.executable, "-c", BLAST_SERVER, str(n_frames), str(n_symbols)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        settings = load_config()
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": Path(tmp)})})
            collector = Collector(settings)

            async def run() -> float:
                stop = asyncio.Event()
                conn = StreamConnection("bench", f"ws://127.0.0.1:{port}", collector, silence_s=60)
                conn.set_streams({f"s{i:03d}usdt@aggTrade" for i in range(n_symbols)})
                for i in range(n_symbols):
                    book = SymbolBook(f"S{i:03d}USDT", 0)
                    book.anchored, book.conn = True, conn
                    collector.books[book.symbol] = book
                task = asyncio.create_task(conn.run(stop))
                while collector.stream_trades == 0:
                    await asyncio.sleep(0.001)
                start = time.perf_counter()
                while collector.stream_trades < n_frames and time.perf_counter() - start < 120:
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - start
                stop.set()
                await task
                return elapsed

            elapsed = asyncio.run(run())
        lost = n_frames - collector.stream_trades
        print(
            f"socket ingest: {collector.stream_trades / elapsed:,.0f} aggTrade frames/s on one core over a real "
            f"WebSocket ({n_symbols} symbols), {lost} lost, {collector.gaps_opened} gaps, "
            f"{collector.duplicates} duplicates"
        )
    finally:
        server.kill()
        server.wait(10)


def start_simulator(data_dir: Path, symbols: int, firehose: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LSQ_DATA_DIR": str(data_dir)}
    cmd = [
        str(Path(sys.executable).with_name("lsq")),
        "sim",
        "serve",
        "--port",
        "0",
        "--fresh",
        "--symbols",
        str(symbols),
        "--firehose",
        str(firehose),
        "--rate-limit-multiplier",
        "20",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://([\d.]+):(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, f"{m.group(1)}:{m.group(2)}"


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(RSS MiB, peak RSS MiB, CPU seconds) of a running process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024, cpu_s


def bench_live(symbols: int, firehose: float, seconds: float) -> None:
    """`lsq collect` against the simulator's firehose, each in its own process; then store vs exchange."""
    from simulator.market import Market

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        sim, host = start_simulator(data / "sim", symbols, firehose)
        collector: subprocess.Popen | None = None
        try:
            # the simulator builds each symbol's day of trades on the first 24 h ticker: not the collector's time
            warm = time.perf_counter()
            urllib.request.urlopen(f"http://{host}/fapi/v1/ticker/24hr", timeout=600).read()
            print(f"(simulator warm-up: {time.perf_counter() - warm:.0f} s)")
            now = time.time_ns() // 1_000_000
            skew = window_start(now) + 2 * WINDOW_MS - 10_000 - now  # a window ends 10 s from now
            body = json.dumps({"clock_skew_ms": skew}).encode()
            request = urllib.request.Request(f"http://{host}/admin/faults", data=body, method="POST")
            urllib.request.urlopen(request, timeout=30).read()
            config = data / "lsq.yaml"
            endpoints = {"rest_url": f"http://{host}", "ws_url": f"ws://{host}", "data_url": f"http://{host}/data"}
            config.write_text(json.dumps({"data": {"data_dir": str(data)}, "binance": {"mock": endpoints}}))
            env = {**os.environ, "LSQ_CONFIG": str(config)}
            lsq = str(Path(sys.executable).with_name("lsq"))
            collector = subprocess.Popen([lsq, "collect"], env=env, stderr=subprocess.DEVNULL)
            status_path = DataPaths(data).collector_status
            status = wait_status(status_path, lambda s: s["symbols"] > 0 and s["gaps_open"] == 0, 120)
            t0, n0, cpu0 = time.perf_counter(), status["stream_trades"], proc_stats(collector.pid)[2]
            time.sleep(seconds)
            status = wait_status(status_path, lambda s: s["updated_at"] > status["updated_at"], 10)
            rss, peak, cpu1 = proc_stats(collector.pid)
            elapsed = time.perf_counter() - t0
            rate = (status["stream_trades"] - n0) / elapsed
            collector.send_signal(signal.SIGTERM)
            exit_code = collector.wait(30)
        finally:
            if collector is not None and collector.poll() is None:
                collector.kill()
            sim.terminate()
            sim.wait(10)
        market = Market(select_instruments(symbols), seed=7, rate_multiplier=firehose)
        server_now = time.time_ns() // 1_000_000 + skew
        store = TradeStore(DataPaths(data))
        first = min(
            window_start(int(store.scan(s, 0, 1 << 62).first().collect()["transact_time"][0])) for s in store.symbols()
        )
        lost = extra = total = 0
        for s in store.symbols():
            want = set(market.trades(s, first, server_now - 5_000).agg_id.tolist())
            got = set(store.scan(s, first, server_now - 5_000).collect()["agg_trade_id"].to_list())
            lost += len(want - got)
            extra += len(got - want)
            total += len(want)
        print(
            f"live ingest: {rate:,.0f} aggTrades/s streamed ({symbols} symbols, firehose x{firehose}), "
            f"collector CPU {(cpu1 - cpu0) / elapsed:.0%} of one core, exit code {exit_code}"
        )
        print(f"store vs exchange: {total:,} trades checked, {lost} lost, {extra} unexpected")
        print(f"`lsq collect` RSS: {rss:.0f} MiB, peak {peak:.0f} MiB ({symbols} symbols)")
        for path in sorted(DataPaths(data).markers.rglob("*.json")):
            marker = json.loads(path.read_text())
            delay = marker["sealed_at"] - marker["window_end"]
            print(f"marker {marker['partition_key']}: {marker['rows']:,} rows, sealed {delay} ms after the window end")


def wait_status(path: Path, predicate: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = json.loads(path.read_text())
            if predicate(status):
                return status
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"collector status at {path} never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=40, help="symbols of the throughput run")
    parser.add_argument("--firehose", type=float, default=20.0, help="trade rate multiplier of the throughput run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each live run after settling")
    args = parser.parse_args()
    bench_frame_handling()
    bench_socket_ingest()
    print(f"-- {MEMORY_SYMBOLS} symbols (117 real ones, the rest derived), normal rates: memory and marker delay")
    bench_live(MEMORY_SYMBOLS, 1.0, args.seconds)
    print("-- firehose: throughput")
    bench_live(args.symbols, args.firehose, args.seconds)


if __name__ == "__main__":
    main()
