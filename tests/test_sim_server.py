"""The simulator's REST server through real clients: python-binance (sync and async) and raw HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from binance.exceptions import BinanceAPIException
from conftest import SimServer

from lsq.clock import FakeClock
from lsq.config import PROJECT_ROOT
from lsq.exchange import async_rest_client, rest_client
from lsq.timelabels import DAY_MS
from simulator.app import BackgroundServer, RestGateway
from simulator.clock import Clock
from simulator.errors import BinanceError
from simulator.faults import Faults
from simulator.history_files import aggtrades_csv
from simulator.instruments import select_instruments
from simulator.market import Market
from simulator.ratelimit import QuotaLimiter, RateLimits, WeightLimiter
from simulator.routing import Endpoint, Request


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: object


def raw(
    sim: SimServer | str,
    method: str,
    path: str,
    query: str = "",
    body: str = "",
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> Answer:
    """One HTTP request with exactly these bytes, from `source` (any 127.x address works on Linux loopback)."""
    base = sim if isinstance(sim, str) else sim.rest_url
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    hdrs = dict(headers or {})
    if body:
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    conn.request(method, path + (f"?{query}" if query else ""), body=body or None, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return Answer(response.status, {k.upper(): v for k, v in response.getheaders()}, json.loads(data) if data else None)


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def keys(sim: SimServer, index: int = 0) -> tuple[str, str]:
    account = sim.accounts[index]
    assert account.api_key is not None and account.api_secret is not None
    return account.api_key.get_secret_value(), account.api_secret.get_secret_value()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def window_opening_clock(window_ms: int) -> FakeClock:
    """A stopped server clock just after a rate-limit window opens: every request of a counting test falls into that
    one fixed window, however slowly the machine serves them."""
    now = now_ms()
    return FakeClock(now_ms=now - now % window_ms + 1_000)


def start_of_a_minute(sim: SimServer) -> None:
    """Move a running (wall-clock) server's time to just after a minute starts, for signed requests, whose
    timestamps must follow the server's clock: a minute-window count is then exact unless the test takes 59 s."""
    now = now_ms()
    sim.clock.skew_ms = now - now % 60_000 + 60_100 - now


# -- public market data ----------------------------------------------------------------------------------------------


def test_public_market_data_through_python_binance(sim_server: SimServer) -> None:
    client = rest_client(sim_server.settings)
    assert client.futures_ping() == {}
    assert abs(client.futures_time()["serverTime"] - now_ms()) < 2000
    assert "X-MBX-USED-WEIGHT-1M" in client.response.headers

    info = client.futures_exchange_info()
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400} in info[
        "rateLimits"
    ]
    assert set(sim_server.market.instruments) <= {s["symbol"] for s in info["symbols"]}

    end = now_ms() - 60_000
    klines = client.futures_klines(symbol="BTCUSDT", interval="1m", endTime=end, limit=5)
    assert len(klines) == 5 and all(len(row) == 12 for row in klines)
    assert [row[0] for row in klines] == sorted(row[0] for row in klines)

    trades = client.futures_aggregate_trades(symbol="BTCUSDT", startTime=end - 600_000, endTime=end)
    ids = [t["a"] for t in trades]
    assert ids and ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(end - 600_000 <= t["T"] <= end for t in trades)

    funding = client.futures_funding_rate(symbol="BTCUSDT", limit=3)
    assert len(funding) == 3 and all(f["symbol"] == "BTCUSDT" for f in funding)
    premium = client.futures_premium_index_klines(symbol="ETHUSDT", interval="5m", limit=3)
    assert len(premium) == 3 and all(row[5] == "0" for row in premium)


def test_async_client_reads_the_same_market(sim_server: SimServer) -> None:
    async def fetch() -> tuple[dict, list]:
        client = await async_rest_client(sim_server.settings)
        try:
            server_time = await client.futures_time()
            end = server_time["serverTime"] - 120_000
            trades = await client.futures_aggregate_trades(symbol="ETHUSDT", startTime=end - 300_000, endTime=end)
            return server_time, trades
        finally:
            await client.close_connection()

    server_time, trades = asyncio.run(fetch())
    assert abs(server_time["serverTime"] - now_ms()) < 2000
    sync = rest_client(sim_server.settings).futures_aggregate_trades(symbol="ETHUSDT", fromId=trades[0]["a"], limit=5)
    assert sync == trades[:5]


def test_bad_requests_get_binance_errors_and_the_server_keeps_serving(sim_server: SimServer) -> None:
    cases = [
        (("GET", "/fapi/v1/klines", "interval=1m"), 400, -1102),
        (("GET", "/fapi/v1/klines", "symbol=NOPEUSDT&interval=1m"), 400, -1121),
        (("GET", "/fapi/v1/aggTrades", "symbol=BTCUSDT&limit=abc"), 400, -1100),
        (("GET", "/fapi/v1/aggTrades", "symbol=BTCUSDT&symbol=ETHUSDT"), 400, -1101),
        (("GET", "/fapi/v1/nothing", ""), 404, -5000),
        (("DELETE", "/fapi/v1/time", ""), 405, -5000),
        (("GET", "/data/not/a/file.zip", ""), 404, -5000),
    ]
    for (method, path, query), status, code in cases:
        answer = raw(sim_server, method, path, query)
        assert (answer.status, answer.body["code"]) == (status, code), (path, query, answer)  # type: ignore[index]
        assert isinstance(answer.body["msg"], str) and answer.body["msg"]  # type: ignore[index]
        assert "X-MBX-USED-WEIGHT-1M" in answer.headers or path.startswith("/data/")
    assert raw(sim_server, "GET", "/fapi/v1/ping").status == 200


# -- signed requests -------------------------------------------------------------------------------------------------


def test_signed_requests_through_python_binance(sim_server: SimServer) -> None:
    client = rest_client(sim_server.settings, sim_server.accounts[0])
    balance = client.futures_account_balance()
    assert balance[0]["asset"] == "USDT"
    leverage = client.futures_change_leverage(symbol="ETHUSDT", leverage=7)  # POST: signed body
    assert leverage["leverage"] == 7 and leverage["symbol"] == "ETHUSDT"


def test_signature_covers_the_exact_bytes_in_query_or_body(sim_server: SimServer) -> None:
    key, secret = keys(sim_server)
    hdr = {"X-MBX-APIKEY": key}
    query = f"timestamp={now_ms()}&recvWindow=5000"
    ok = raw(sim_server, "GET", "/fapi/v2/balance", f"{query}&signature={hmac_hex(secret, query)}", headers=hdr)
    assert ok.status == 200 and ok.headers["X-MBX-USED-WEIGHT-1M"]

    # Unusual but legal percent-encodings are signed as sent, not as a re-encoding would write them.
    odd = f"note=a%2cb%41+c%7e&timestamp={now_ms()}"
    ok = raw(sim_server, "GET", "/fapi/v2/balance", f"{odd}&signature={hmac_hex(secret, odd)}", headers=hdr)
    assert ok.status == 200
    decoded = odd.replace("a%2cb%41+c%7e", "a,bA c~")
    bad = raw(sim_server, "GET", "/fapi/v2/balance", f"{odd}&signature={hmac_hex(secret, decoded)}", headers=hdr)
    assert (bad.status, bad.body["code"]) == (400, -1022)  # type: ignore[index]

    # Signature in the body, parameters split between query and body: signed over query + body, no separator.
    q, b = "symbol=BTCUSDT", f"leverage=3&timestamp={now_ms()}"
    split = raw(sim_server, "POST", "/fapi/v1/leverage", q, f"{b}&signature={hmac_hex(secret, q + b)}", headers=hdr)
    assert split.status == 200 and split.body["leverage"] == 3  # type: ignore[index]

    # A parameter in both: the query string wins.
    q, b = "symbol=BTCUSDT&leverage=4", f"leverage=9&timestamp={now_ms()}"
    both = raw(sim_server, "POST", "/fapi/v1/leverage", q, f"{b}&signature={hmac_hex(secret, q + b)}", headers=hdr)
    assert both.status == 200 and both.body["leverage"] == 4  # type: ignore[index]

    # Same parameters, other order than signed: the bytes differ, so the signature does not match.
    signed_order = f"recvWindow=5000&timestamp={now_ms()}"
    reordered = "&".join(reversed(signed_order.split("&")))
    bad = raw(
        sim_server, "GET", "/fapi/v2/balance", f"{reordered}&signature={hmac_hex(secret, signed_order)}", headers=hdr
    )
    assert (bad.status, bad.body["code"]) == (400, -1022)  # type: ignore[index]


@pytest.mark.parametrize(
    ("template", "signed", "key_kind", "status", "code"),
    [
        ("timestamp={now}&signature=" + "0" * 64, False, "good", 400, -1022),
        ("timestamp={now}", False, "good", 400, -1102),  # no signature
        ("recvWindow=5000", True, "good", 400, -1102),  # no timestamp
        ("timestamp={past}", True, "good", 400, -1021),  # outside the default recvWindow
        ("timestamp={past}&recvWindow=10000", True, "good", 200, 0),  # inside a wider one
        ("timestamp={future}", True, "good", 400, -1021),  # ahead of the server
        ("timestamp={now}&recvWindow=60001", True, "good", 400, -1131),
        ("timestamp=soon", True, "good", 400, -1100),
        ("timestamp={now}", True, "unknown", 401, -2015),
        ("timestamp={now}", True, "malformed", 401, -2014),
        ("timestamp={now}", True, "none", 401, -2014),
    ],
)
def test_signed_request_failures(
    sim_server: SimServer, template: str, signed: bool, key_kind: str, status: int, code: int
) -> None:
    key, secret = keys(sim_server)
    t = now_ms()
    query = template.format(now=t, past=t - 6000, future=t + 3000)
    if signed:
        query = f"{query}&signature={hmac_hex(secret, query)}"
    headers = {
        "good": {"X-MBX-APIKEY": key},
        "unknown": {"X-MBX-APIKEY": "A" * 64},
        "malformed": {"X-MBX-APIKEY": "no key!"},
    }
    answer = raw(sim_server, "GET", "/fapi/v2/balance", query, headers=headers.get(key_kind, {}))
    assert answer.status == status, answer
    if code:
        assert answer.body["code"] == code and answer.body["msg"], answer  # type: ignore[index]
    assert raw(sim_server, "GET", "/fapi/v1/ping").status == 200


# -- limits ----------------------------------------------------------------------------------------------------------


def test_weight_limit_answers_429_then_bans_with_418_while_others_are_served(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    clock = window_opening_clock(60_000)
    limits = RateLimits(request_weight_per_minute=10, rejections_before_ban=2)
    sim = make_sim_server(symbols=2, limits=limits, clock_base=clock)
    used = [int(raw(sim, "GET", "/fapi/v1/ping").headers["X-MBX-USED-WEIGHT-1M"]) for _ in range(10)]
    assert used == list(range(1, 11))
    limited = [raw(sim, "GET", "/fapi/v1/ping") for _ in range(2)]
    assert all(a.status == 429 and a.body["code"] == -1003 for a in limited)  # type: ignore[index]
    assert 1 <= int(limited[0].headers["RETRY-AFTER"]) <= 60
    banned = raw(sim, "GET", "/fapi/v1/ping")
    assert banned.status == 418 and banned.body["code"] == -1003 and "banned until" in banned.body["msg"]  # type: ignore[index]
    assert 110 <= int(banned.headers["RETRY-AFTER"]) <= 120
    assert raw(sim, "GET", "/fapi/v1/time").status == 418  # still banned
    other = raw(sim, "GET", "/fapi/v1/time", source="127.0.0.2")
    assert other.status == 200 and other.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    clock.advance(60)  # a new minute: the weight starts again from zero, the ban does not end with it
    assert raw(sim, "GET", "/fapi/v1/time", source="127.0.0.2").headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert raw(sim, "GET", "/fapi/v1/time").status == 418
    clock.advance(60)
    assert raw(sim, "GET", "/fapi/v1/time").status == 200


def test_funding_history_has_binances_own_quota_not_request_weight(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    """GET /fapi/v1/fundingRate weighs nothing against REQUEST_WEIGHT; it has its own per-IP quota (Binance: 500 per
    5 min, shared with fundingInfo), answered 429 -1003 with Retry-After when spent, while other endpoints serve."""
    clock = window_opening_clock(300_000)
    sim = make_sim_server(symbols=2, limits=RateLimits(funding_requests_per_5min=2), clock_base=clock)
    answers = [raw(sim, "GET", "/fapi/v1/fundingRate", "limit=5") for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429] and answers[2].body["code"] == -1003  # type: ignore[index]
    assert all(a.headers["X-MBX-USED-WEIGHT-1M"] == "0" for a in answers)
    assert 1 <= int(answers[2].headers["RETRY-AFTER"]) <= 300
    assert (
        raw(sim, "GET", "/fapi/v1/klines", "symbol=BTCUSDT&interval=1m&limit=1500").headers["X-MBX-USED-WEIGHT-1M"]
        == "10"
    )  # klines weigh by limit
    assert raw(sim, "GET", "/fapi/v1/fundingRate", "limit=5", source="127.0.0.2").status == 200
    clock.advance(300)  # the next fixed 5-minute window
    assert raw(sim, "GET", "/fapi/v1/fundingRate", "limit=5").status == 200


def test_quota_windows_are_fixed_per_ip() -> None:
    limiter = QuotaLimiter(RateLimits(funding_requests_per_5min=1))
    window = 5 * 60_000
    assert limiter.admit("funding", "a", 10 * window) is None
    refused = limiter.admit("funding", "a", 10 * window + 1)
    assert refused is not None and refused.retry_after_s == 300
    assert limiter.admit("funding", "b", 10 * window + 2) is None
    assert limiter.admit("funding", "a", 11 * window) is None


def test_bans_double_for_repeat_offenders() -> None:
    limiter = WeightLimiter(RateLimits(request_weight_per_minute=1, rejections_before_ban=0))
    t = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
    assert limiter.admit("1.2.3.4", 1, t).error is None
    first = limiter.admit("1.2.3.4", 1, t + 1)
    assert first.error is not None and first.error.http_status == 418 and first.retry_after_s == 120
    assert limiter.admit("1.2.3.4", 1, t + 119_000).error.http_status == 418  # type: ignore[union-attr]
    t2 = t + 121_000
    t2 -= t2 % 60_000
    t2 += 120_000
    assert limiter.admit("1.2.3.4", 1, t2).error is None
    second = limiter.admit("1.2.3.4", 1, t2 + 1)
    assert second.error is not None and second.retry_after_s == 240
    assert limiter.admit("5.6.7.8", 1, t2 + 2).error is None


def test_order_count_headers_and_order_rate_limit(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim_server(symbols=2, limits=RateLimits(orders_per_minute=3))
    start_of_a_minute(sim)
    client = rest_client(sim.settings, sim.accounts[0])
    counts = []
    for _ in range(3):
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
        counts.append(client.response.headers["X-MBX-ORDER-COUNT-1M"])
        assert client.response.headers["X-MBX-ORDER-COUNT-10S"]
    assert counts == ["1", "2", "3"]
    with pytest.raises(BinanceAPIException) as info:
        client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
    assert (info.value.status_code, info.value.code) == (429, -1015)
    # Reads are not orders: still served, and the other account has its own order budget.
    assert client.futures_account_balance()
    other = rest_client(sim.settings, sim.accounts[1])
    other.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert other.response.headers["X-MBX-ORDER-COUNT-1M"] == "1"


def test_exchange_info_advertises_raised_limits(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim_server(symbols=2, limits=RateLimits().scaled(10))
    limits = {
        (r["rateLimitType"], r["intervalNum"]): r["limit"]
        for r in rest_client(sim.settings).futures_exchange_info()["rateLimits"]
    }
    assert limits == {("REQUEST_WEIGHT", 1): 24000, ("ORDERS", 1): 12000, ("ORDERS", 10): 3000}


def test_an_exception_in_a_handler_is_answered_as_unknown_error() -> None:
    async def broken(request: Request) -> object:
        raise RuntimeError("bug")

    async def refused(request: Request) -> object:
        raise BinanceError(-4164, "Order's notional must be no smaller than 5.")

    async def fine(request: Request) -> object:
        return {"params": dict(request.params)}

    clock = Clock()
    gateway = RestGateway(
        [Endpoint("GET", "/broken", broken), Endpoint("GET", "/refused", refused), Endpoint("POST", "/fine", fine)],
        clock,
        Faults(clock=clock),
        RateLimits(),
        lambda key: None,
    )
    with BackgroundServer(lambda: web.Application(middlewares=[gateway.middleware])) as server:
        crash = raw(server.rest_url, "GET", "/broken")
        assert (crash.status, crash.body) == (
            500,
            {"code": -1000, "msg": "An unknown error occurred while processing the request."},
        )
        refusal = raw(server.rest_url, "GET", "/refused")
        assert (refusal.status, refusal.body["code"]) == (400, -4164)  # type: ignore[index]
        echo = raw(server.rest_url, "POST", "/fine", "a=query", "a=body&b=2")
        assert echo.body == {"params": {"a": "query", "b": "2"}}


def test_half_open_connections_are_closed_after_the_idle_timeout() -> None:
    """Clients that connect and never finish a request head (or go quiet after a response) are closed, so they
    cannot pile up; a client that completes its request meanwhile is served, and a WebSocket that only listens
    outlives the timeout."""

    async def ticks(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for n in range(6):
            await ws.send_str(str(n))
            await asyncio.sleep(0.5)
        await ws.close()
        return ws

    def app() -> web.Application:
        application = web.Application()
        application.router.add_get("/ticks", ticks)
        return application

    async def listen(url: str) -> list[str]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            return [msg.data async for msg in ws]

    with BackgroundServer(app, idle_timeout_s=1.0) as server:
        assert asyncio.run(listen(server.ws_url + "/ticks")) == [str(n) for n in range(6)]
        port = server.port
        half_open = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(20)]
        for sock in half_open[:10]:
            sock.sendall(b"GET /fapi/v1/pi")  # a partial request line
        quiet = socket.create_connection(("127.0.0.1", port), timeout=30)
        quiet.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert quiet.recv(64).startswith(b"HTTP/1.1 404")
        deadline = time.monotonic() + 30
        for sock in [*half_open, quiet]:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while sock.recv(65536):  # the 404's remainder, then the close
                    pass
            except ConnectionResetError:
                pass
            sock.close()
        # recv() returned b"" (closed by the server) for every socket before the deadline, or it raised TimeoutError


def test_lsq_sim_serve_takes_an_idle_timeout_and_refuses_a_bad_one(tmp_path: Path) -> None:
    env = {**os.environ, "LSQ_DATA_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0", "--symbols", "3", "--idle-timeout", "0"]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--idle-timeout" in done.stderr and "Traceback" not in done.stderr


# -- history files ---------------------------------------------------------------------------------------------------


def test_history_files_are_served_under_data(sim_server: SimServer) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * 86400))
    path = f"/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{day}.zip"
    with urllib.request.urlopen(sim_server.rest_url + path, timeout=30) as response:
        data = response.read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = archive.namelist()
        assert name == f"BTCUSDT-aggTrades-{day}.csv"
    with urllib.request.urlopen(sim_server.rest_url + path + ".CHECKSUM", timeout=30) as response:
        assert response.read().decode().split()[0] == hashlib.sha256(data).hexdigest()


# -- the command -----------------------------------------------------------------------------------------------------


def test_lsq_sim_serve_starts_with_fault_flags_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "LSQ_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0", "--symbols", "3", "--fresh"]
    cmd += ["--clock-skew-ms", "60000", "--duplicate-share", "0.25", "--rate-limit-multiplier", "2"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on http://127.0.0.1:"), line + (
            proc.stderr.read() if proc.poll() else ""
        )
        rest = line.split()[3]
        assert line.strip().endswith("(streams)") and rest.replace("http", "ws") in line
        with urllib.request.urlopen(rest + "/admin/faults", timeout=10) as response:
            state = json.loads(response.read())
        assert state["clock_skew_ms"] == 60000 and state["duplicate_share"] == 0.25
        with urllib.request.urlopen(rest + "/fapi/v1/time", timeout=10) as response:
            assert json.loads(response.read())["serverTime"] - now_ms() > 55_000
        with urllib.request.urlopen(rest + "/fapi/v1/exchangeInfo", timeout=10) as response:
            assert json.loads(response.read())["rateLimits"][0]["limit"] == 4800
        assert (tmp_path / "simulator").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lsq_sim_serve_replays_recorded_trades_on_rest_and_stream(tmp_path: Path) -> None:
    market = Market(select_instruments(2), seed=3)
    day_ms = (now_ms() // DAY_MS - 2) * DAY_MS
    day = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
    lines = aggtrades_csv(market, "ETHUSDT", day_ms).splitlines()[:3001]
    recording = tmp_path / f"ETHUSDT-aggTrades-{day}.csv"
    recording.write_text("\n".join(lines) + "\n")
    rows = {int(r[0]): r for r in (line.split(",") for line in lines[1:])}

    env = {**os.environ, "LSQ_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0", "--fresh"]
    cmd += ["--replay", str(recording), "--replay-speed", "20"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on"), line + (proc.stderr.read() if proc.poll() else "")
        rest = line.split()[3]

        async def stream() -> list[dict]:
            url = rest.replace("http://", "ws://") + "/market/ws/ethusdt@aggTrade"
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                return [json.loads((await asyncio.wait_for(ws.receive(), 10)).data) for _ in range(20)]

        streamed = asyncio.run(stream())
        ids = [t["a"] for t in streamed]
        assert ids == list(range(ids[0], ids[0] + 20)) and set(ids) <= set(rows)
        for t in streamed:
            a, p, q, f, last, _, m = rows[t["a"]]
            assert (str(t["a"]), t["p"], t["q"], str(t["f"]), str(t["l"]), str(t["m"]).lower()) == (a, p, q, f, last, m)
        with urllib.request.urlopen(
            f"{rest}/fapi/v1/aggTrades?symbol=ETHUSDT&fromId={ids[0]}&limit=20", timeout=10
        ) as r:
            assert [t["a"] for t in json.loads(r.read())] == ids
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lsq_sim_serve_rejects_bad_options_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "LSQ_DATA_DIR": str(tmp_path)}
    base = [sys.executable, "-m", "lsq.cli", "sim", "serve", "--port", "0"]
    for extra, expected in (
        (["--symbols", "5000"], "k must be 1.."),
        (["--replay", str(tmp_path / "missing.csv")], "replay files not found"),
        (["--duplicate-share", "1.5"], "must be within 0..1"),
    ):
        done = subprocess.run(base + extra, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and expected in done.stderr, (extra, done.stderr)
