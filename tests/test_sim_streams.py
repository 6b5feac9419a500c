"""Market and user-data WebSocket streams through real clients: python-binance's socket manager, `websockets`,
aiohttp's client and a bare TCP socket, against the real server on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import SimServer

from lsq.exchange import async_rest_client, rest_client, socket_manager
from lsq.timelabels import DAY_MS
from simulator.streams import StreamSettings

AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}


@pytest.fixture
def busy(busy_sim_server: SimServer) -> SimServer:
    return busy_sim_server


async def collect(ws: Any, seconds: float) -> list[Any]:
    """Every JSON message received within `seconds` (websockets client)."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return out


async def collect_until(ws: Any, done: Callable[[list[Any]], bool], what: str, timeout_s: float = 60.0) -> list[Any]:
    """Every JSON message received until `done(messages)` holds, with a deadline generous enough for a loaded CI
    machine (websockets client)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while not done(out):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up after {timeout_s:.0f} s waiting for {what}; last messages: {out[-3:]}"
        with contextlib.suppress(TimeoutError):
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
    return out


def answers_in(messages: list[Any]) -> list[Any]:
    """The answers to requests among stream messages."""
    return [m for m in messages if "stream" not in m and "e" not in m]


def check_against_rest(sim: SimServer, trades: list[dict[str, Any]]) -> None:
    """Streamed aggTrades are contiguous per symbol and identical to what REST serves for the same ids."""
    by_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trades:
        assert set(t) == AGG_KEYS and t["e"] == "aggTrade"
        # sent after the trade, at a time that has passed (how soon depends on the machine's load: not asserted)
        assert t["T"] <= t["E"] <= sim.clock.now_ms()
        by_symbol[t["s"]].append(t)
    client = rest_client(sim.settings)
    for symbol, rows in by_symbol.items():
        ids = [r["a"] for r in rows]
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"{symbol}: ids not contiguous"
        rest = client.futures_aggregate_trades(symbol=symbol, fromId=ids[0], limit=min(len(ids), 1000))
        assert [{k: r[k] for k in "apqflTm"} for r in rows[: len(rest)]] == rest


def test_python_binance_multiplex_socket_gets_every_trade_once_in_order(busy: SimServer) -> None:
    async def run() -> list[dict[str, Any]]:
        client = await async_rest_client(busy.settings)
        try:
            bsm = socket_manager(client, busy.settings)
            got: list[dict[str, Any]] = []
            async with bsm.futures_multiplex_socket(["btcusdt@aggTrade", "ethusdt@aggTrade"]) as stream:
                # until both streams delivered a run of trades (the first day's trades take seconds to generate)
                deadline = time.monotonic() + 60
                while min(sum(t["s"] == s for t in got) for s in ("BTCUSDT", "ETHUSDT")) < 10:
                    assert time.monotonic() < deadline, f"60 s and only {len(got)} trades"
                    msg = await asyncio.wait_for(stream.recv(), 60)
                    assert msg.get("e") != "error", msg
                    assert msg["stream"] == msg["data"]["s"].lower() + "@aggTrade"
                    got.append(msg["data"])
            return got
        finally:
            await client.close_connection()

    trades = asyncio.run(run())
    assert {t["s"] for t in trades} == {"BTCUSDT", "ETHUSDT"}
    check_against_rest(busy, trades)


def test_subscribe_list_unsubscribe_and_bad_requests_keep_the_connection(busy: SimServer) -> None:
    async def run() -> None:
        async with (
            websockets.connect(busy.ws_url + "/market/stream?streams=btcusdt@aggTrade") as ws,
            # Unbounded client queue: this client reads late, and a full queue would stall its close handshake.
            websockets.connect(busy.ws_url + "/market/ws/ethusdt@aggTrade", max_queue=None) as bystander,
        ):
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ETHUSDT@aggTrade"], "id": 1}))
            await ws.send("this is not json")
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": "btcusdt@aggTrade", "id": 2}))
            await ws.send(json.dumps({"method": "FETCH", "id": 3}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 4}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 5}))
            await ws.send(b"\x00\x01")
            messages = await collect_until(
                ws,
                lambda ms: (
                    len(answers_in(ms)) >= 7 and {m["data"]["s"] for m in ms if "stream" in m} >= {"BTCUSDT", "ETHUSDT"}
                ),
                "seven answers and trades of both symbols",
            )
            answers = answers_in(messages)
            assert answers[0] == {"result": None, "id": 1}
            assert answers[1]["error"]["code"] == 3 and answers[1]["error"]["msg"].startswith("Invalid JSON")
            assert answers[2]["error"]["code"] == 2 and answers[2]["id"] == 2
            assert answers[3]["error"]["code"] == 2 and "FETCH" in answers[3]["error"]["msg"] and answers[3]["id"] == 3
            assert answers[4]["error"]["code"] == 2 and "btcusdt@depth" in answers[4]["error"]["msg"]
            assert answers[5] == {"result": ["btcusdt@aggTrade", "ethusdt@aggTrade"], "id": 5}
            assert answers[6]["error"]["code"] == 3
            data = [m["data"] for m in messages if "stream" in m]
            assert {d["s"] for d in data} == {"BTCUSDT", "ETHUSDT"}, "still streaming after bad requests"
            check_against_rest(busy, data)

            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 6}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
            listed = {"result": ["ethusdt@aggTrade"], "id": 7}
            later = await collect_until(
                ws,
                lambda ms: listed in ms and any("stream" in m for m in ms[ms.index(listed) :]),
                "the answers and a trade after them",
            )
            assert {"result": None, "id": 6} in later and {"result": ["ethusdt@aggTrade"], "id": 7} in later
            answered = later.index({"result": ["ethusdt@aggTrade"], "id": 7})
            assert all(m["data"]["s"] == "ETHUSDT" for m in later[answered:] if "stream" in m)

            raw = await collect_until(bystander, lambda ms: len(ms) >= 1, "a raw trade")
            assert raw and all(m["e"] == "aggTrade" and m["s"] == "ETHUSDT" for m in raw), "raw payloads, unwrapped"

    asyncio.run(run())


def test_request_ids_are_unsigned_integers_as_on_binance_futures(busy: SimServer) -> None:
    """Binance's futures streams take an unsigned integer id (or none) and refuse strings, negatives, fractions and
    booleans with code 2 and a null id, keeping the connection; a refused request subscribes nothing."""

    async def run() -> None:
        async with websockets.connect(busy.ws_url + "/market/ws") as ws:
            accepted = [0, 2**64 - 1, None]
            refused = ["7", "abc", -1, 1.5, True, 2**64, [1], {"n": 1}]
            for req_id in accepted + refused:
                await asyncio.sleep(0.15)  # under Binance's 10 messages a second
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": req_id}))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                while "e" in answer:  # a markPrice update in between
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if req_id in accepted and not isinstance(req_id, bool):
                    assert answer == {"result": None, "id": req_id}, req_id
                else:
                    assert answer["id"] is None and answer["error"]["code"] == 2, req_id
                    assert "unsigned integer" in answer["error"]["msg"]
            await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@markPrice"], "id": "x"}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            answers = answers_in(await collect_until(ws, lambda ms: len(answers_in(ms)) >= 2, "two answers"))
            assert answers[0]["error"]["code"] == 2
            assert answers[1] == {"result": ["btcusdt@markPrice"], "id": 9}, "the refused UNSUBSCRIBE did nothing"

    asyncio.run(run())


@pytest.mark.slow
def test_heavy_history_requests_do_not_stall_the_streams(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    """Eight anonymous requests over the whole history (daily and 12 h klines from the epoch, every symbol's funding)
    keep the server busy for a long while; meanwhile a stream client keeps getting aggTrades without a long gap,
    and the heavy answers are right (daily klines agree with the hourly ones, all-symbol funding with per-symbol)."""
    sim = make_sim_server(symbols=4, firehose=0.15)
    symbols = sorted(sim.market.instruments)
    heavy = [f"/fapi/v1/klines?symbol={s}&interval={i}&startTime=0&limit=1500" for s in symbols for i in ("1d", "12h")]
    heavy[-1] = "/fapi/v1/fundingRate?startTime=0&limit=1000"

    async def get(http: aiohttp.ClientSession, path: str) -> Any:
        async with http.get(sim.rest_url + path, timeout=aiohttp.ClientTimeout(total=900)) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def run() -> tuple[float, int, list[Any]]:
        streams = "/".join(f"{s.lower()}@aggTrade" for s in symbols)
        async with websockets.connect(f"{sim.ws_url}/market/stream?streams={streams}", max_queue=None) as ws:
            await asyncio.wait_for(ws.recv(), 120)  # today's trades are generated: the stream is flowing
            async with aiohttp.ClientSession() as http:
                tasks = [asyncio.create_task(get(http, p)) for p in heavy]
                worst, received, last = 0.0, 0, time.monotonic()
                while not all(t.done() for t in tasks):
                    try:
                        await asyncio.wait_for(ws.recv(), 1)
                    except TimeoutError:
                        pass
                    else:
                        received += 1
                        now = time.monotonic()
                        worst, last = max(worst, now - last), now
                return worst, received, [t.result() for t in tasks]

    worst, received, answers = asyncio.run(run())
    assert received > 0 and worst < 10, f"the stream stalled for {worst:.1f} s under heavy REST load"

    client = rest_client(sim.settings)
    for symbol, daily in zip(symbols, answers[0::2], strict=True):
        opens = [row[0] for row in daily]
        assert opens == list(range(opens[0], opens[-1] + 1, DAY_MS)) and opens[-1] == now_day()
        day = daily[len(daily) // 2]
        hours = client.futures_klines(symbol=symbol, interval="1h", startTime=day[0], limit=24)
        assert [day[1], day[4], day[8]] == [hours[0][1], hours[-1][4], sum(h[8] for h in hours)]
        assert Decimal(day[2]) == max(Decimal(h[2]) for h in hours) and Decimal(day[5]) == sum(
            Decimal(h[5]) for h in hours
        )
    funding = answers[-1]
    assert len(funding) == 1000 and funding == sorted(funding, key=lambda r: (r["fundingTime"], r["symbol"]))
    btc = [r for r in funding if r["symbol"] == "BTCUSDT"]
    alone = client.futures_funding_rate(symbol="BTCUSDT", startTime=btc[0]["fundingTime"], limit=len(btc))
    assert alone == btc


def now_day() -> int:
    now = int(time.time() * 1000)
    return now - now % DAY_MS


def test_mark_price_streams(busy: SimServer) -> None:
    async def run() -> list[dict[str, Any]]:
        streams = "btcusdt@markPrice@1s/ethusdt@markPrice/!markPrice@arr@1s"
        async with websockets.connect(f"{busy.ws_url}/market/stream?streams={streams}") as ws:
            return await collect_until(
                ws,
                lambda ms: (
                    min(sum(m["stream"] == s for m in ms) for s in (*streams.split("/"), "ethusdt@markPrice")) >= 2
                    and sum(m["stream"] == "btcusdt@markPrice@1s" for m in ms) >= 3
                ),
                "three 1 s updates and two 3 s ones",
            )

    messages = asyncio.run(run())
    by_stream: dict[str, list[Any]] = defaultdict(list)
    for m in messages:
        by_stream[m["stream"]].append(m["data"])
    fast = by_stream["btcusdt@markPrice@1s"]
    assert len(fast) >= 3 and all(set(d) == {"e", "E", "s", "p", "i", "P", "r", "T"} for d in fast)
    # the cadence on the server's clock (event times), not counted against the wall clock
    assert all(b["E"] - a["E"] >= 900 for a, b in itertools.pairwise(fast))
    assert all(b["E"] - a["E"] >= 2_900 for a, b in itertools.pairwise(by_stream["ethusdt@markPrice"]))
    arrays = by_stream["!markPrice@arr@1s"]
    assert len(arrays) >= 3 and {d["s"] for d in arrays[0]} == set(busy.market.instruments)
    premium = rest_client(busy.settings).futures_mark_price(symbol="BTCUSDT")
    assert abs(float(premium["markPrice"]) / float(fast[-1]["p"]) - 1) < 0.01
    assert premium["nextFundingTime"] == fast[-1]["T"]


def test_stream_limits_too_many_streams_and_too_many_messages(busy: SimServer) -> None:
    async def run() -> None:
        async with websockets.connect(busy.ws_url + "/market/ws") as ws:
            names = [f"sym{i}usdt@aggTrade" for i in range(1024)]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
            assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2}))
            refused = json.loads(await ws.recv())
            assert refused["id"] == 2 and "1024" in refused["error"]["msg"]
        async with websockets.connect(busy.ws_url + "/market/ws") as chatty:
            for i in range(15):
                await chatty.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(20):
                    await asyncio.wait_for(chatty.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        async with websockets.connect(busy.ws_url + "/market/ws/btcusdt@aggTrade") as calm:
            # trades come in bursts: wait for the next one, however quiet the moment
            first = json.loads(await asyncio.wait_for(calm.recv(), 60))
            assert first["e"] == "aggTrade", "the server keeps serving others"

    asyncio.run(run())


def test_legacy_paths_accept_and_answer_but_stay_silent(busy: SimServer) -> None:
    async def run() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with (
            websockets.connect(busy.ws_url + "/ws") as bare,
            websockets.connect(busy.ws_url + "/ws/btcusdt@aggTrade") as raw,
            websockets.connect(busy.ws_url + "/stream?streams=btcusdt@aggTrade") as combined,
            websockets.connect(busy.ws_url + "/market/ws/btcusdt@aggTrade") as live,
        ):
            await bare.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 9}))
            # trades come in bursts: wait until /market has streamed one, then see what the legacy paths got
            live_first = [json.loads(await asyncio.wait_for(live.recv(), 60))]
            got = await asyncio.gather(collect(bare, 1.0), collect(raw, 1.0), collect(combined, 1.0))
            return got[0], got[1], got[2], live_first

    bare, raw, combined, live = asyncio.run(run())
    assert bare == [{"result": None, "id": 9}]
    assert raw == [] and combined == []
    assert live, "the same stream on /market had trades meanwhile"


def test_unknown_stream_in_the_url_is_refused(busy: SimServer) -> None:
    async def run() -> int:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(busy.ws_url + "/market/stream?streams=btcusdt@nonsense"):
                pass
        return refused.value.response.status_code

    assert asyncio.run(run()) == 400


# -- housekeeping: pings, pong timeouts, lifetimes, slow clients ------------------------------------------------------


def test_server_pings_and_drops_a_client_that_never_pongs(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim_server(
        symbols=2, stream_settings=StreamSettings(ping_interval_s=0.3, pong_timeout_s=1.2, housekeeping_s=0.1)
    )

    async def run() -> tuple[int, float, bool]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            mute = await session.ws_connect(sim.ws_url + "/market/ws/btcusdt@aggTrade", autoping=False)
            polite = await websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade")  # answers pings itself
            pings = 0
            async with asyncio.timeout(60):
                async for msg in mute:
                    if msg.type == aiohttp.WSMsgType.PING:
                        pings += 1
            lasted = time.monotonic() - started
            await asyncio.sleep(0.5)
            polite_alive = polite.state is websockets.protocol.State.OPEN
            await polite.close()
            return pings, lasted, polite_alive

    pings, lasted, polite_alive = asyncio.run(run())
    assert pings >= 2
    assert lasted >= 1.2, "dropped only after the pong timeout"  # a loaded machine only makes it later
    assert polite_alive


def test_connections_are_closed_at_their_lifetime(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim_server(symbols=2, stream_settings=StreamSettings(max_lifetime_s=1.5, housekeeping_s=0.1))

    async def run() -> tuple[float, int | None]:
        started = time.monotonic()
        async with websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade") as ws:
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
        return time.monotonic() - started, closed.value.rcvd.code if closed.value.rcvd else None

    lasted, code = asyncio.run(run())
    assert lasted >= 1.4 and code == 1000  # closed at its lifetime, not before (later only on a loaded machine)


def _stalled_client(ws_url: str, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads, with a tiny receive buffer."""
    host, port = ws_url.removeprefix("ws://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_slow_client_is_disconnected_without_stalling_others(make_sim_server) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim_server(symbols=40, stream_settings=StreamSettings(max_buffer_bytes=2048, housekeeping_s=0.1))
    path = "/market/ws/!markPrice@arr@1s"
    stalled = _stalled_client(sim.ws_url, path)

    def shrink_server_buffers() -> None:
        hub = sim.market_hub
        for conn in hub.connections:
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    try:
        sim.call(shrink_server_buffers)

        async def healthy() -> int:
            async with websockets.connect(sim.ws_url + path) as ws:
                got = 0
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    await asyncio.wait_for(ws.recv(), 60)
                    got += 1
                    if sim.admin("stats")["market_streams"]["connections"] == 1:
                        break
                return got

        got = asyncio.run(healthy())
        assert sim.admin("stats")["market_streams"]["connections"] == 0
        assert got >= 2
        stalled.settimeout(5)
        with pytest.raises((ConnectionResetError, TimeoutError)):
            while stalled.recv(65536):
                pass
            raise ConnectionResetError("closed")
    finally:
        stalled.close()


# -- user data stream ------------------------------------------------------------------------------------------------


def test_user_stream_delivers_account_events_to_that_account_only(sim_server: SimServer) -> None:
    alpha = rest_client(sim_server.settings, sim_server.accounts[0])
    beta = rest_client(sim_server.settings, sim_server.accounts[1])
    key_a, key_b = alpha.futures_stream_get_listen_key(), beta.futures_stream_get_listen_key()
    assert key_a != key_b

    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        async with (
            websockets.connect(f"{sim_server.ws_url}/private/ws?listenKey={key_a}") as by_query,
            websockets.connect(f"{sim_server.ws_url}/private/ws/{key_a}") as by_path,
            websockets.connect(f"{sim_server.ws_url}/private/ws?listenKey={key_b}") as other,
        ):
            await asyncio.sleep(0.2)
            await asyncio.to_thread(
                alpha.futures_create_order, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01"
            )

            def filled(ms: list[Any]) -> bool:
                kinds = {(m["e"], m.get("o", {}).get("X")) for m in ms}
                return ("ORDER_TRADE_UPDATE", "FILLED") in kinds and any(k == "ACCOUNT_UPDATE" for k, _ in kinds)

            mine = await asyncio.gather(
                collect_until(by_query, filled, "the fill by query"), collect_until(by_path, filled, "the fill by path")
            )
            return mine[0], mine[1], await collect(other, 1.0)  # the other account's stream stays silent

    by_query, by_path, other = asyncio.run(run())
    kinds = [m["e"] for m in by_query]
    assert "ORDER_TRADE_UPDATE" in kinds and "ACCOUNT_UPDATE" in kinds
    order = next(m for m in by_query if m["e"] == "ORDER_TRADE_UPDATE" and m["o"]["X"] == "FILLED")
    assert order["o"]["s"] == "ETHUSDT" and order["o"]["S"] == "BUY"
    assert by_path == by_query
    assert other == []


def test_user_stream_refuses_unknown_keys_and_announces_expiry(sim_server: SimServer) -> None:
    client = rest_client(sim_server.settings, sim_server.accounts[1])

    async def unknown() -> tuple[list[Any], int | None]:
        async with websockets.connect(f"{sim_server.ws_url}/private/ws?listenKey=nope") as ws:
            got: list[Any] = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return got, closed.value.rcvd.code if closed.value.rcvd else None

    got, code = asyncio.run(unknown())
    assert got == [{"error": {"code": -1125, "msg": "This listenKey does not exist."}}] and code == 1008

    key = client.futures_stream_get_listen_key()

    async def expiring() -> list[Any]:
        async with websockets.connect(f"{sim_server.ws_url}/private/ws/{key}") as ws:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(client.futures_stream_close, listenKey=key)
            got: list[Any] = []
            with pytest.raises(websockets.ConnectionClosedOK):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return got

    events = asyncio.run(expiring())
    assert [e["e"] for e in events] == ["listenKeyExpired"] and events[0]["listenKey"] == key


def test_python_binance_futures_user_socket_and_large_frames(sim_server: SimServer) -> None:
    account = sim_server.accounts[0]

    async def run() -> list[dict[str, Any]]:
        client = await async_rest_client(sim_server.settings, account)
        try:
            bsm = socket_manager(client, sim_server.settings)
            got: list[dict[str, Any]] = []
            user_socket = bsm.futures_user_socket()
            user_socket.TIMEOUT = 1  # python-binance's exit waits this long for a message on a quiet stream
            async with user_socket as stream:
                await asyncio.sleep(0.3)
                await client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
                big = {"e": "TEST_BIG", "blob": "x" * 70_000}  # over 65535 bytes: the 8-byte frame length
                await asyncio.to_thread(sim_server.call, lambda: sim_server.users.publish(account.account_id, big))
                deadline = time.monotonic() + 60
                while not any(m.get("e") == "TEST_BIG" for m in got) and time.monotonic() < deadline:
                    msg = await asyncio.wait_for(stream.recv(), 60)
                    assert msg.get("e") != "error", msg
                    got.append(msg)
            return got
        finally:
            await client.close_connection()

    events = asyncio.run(run())
    orders = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert orders and orders[-1]["s"] == "BTCUSDT" and orders[-1]["S"] == "SELL"
    assert events[-1] == {"e": "TEST_BIG", "blob": "x" * 70_000}
