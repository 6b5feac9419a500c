"""Every injected fault, set through POST /admin/faults, observed through real clients."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from binance.exceptions import BinanceAPIException
from conftest import SimServer

from lsq.exchange import async_rest_client, rest_client, socket_manager


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def agg_until(ws: Any, count: int, timeout_s: float = 60.0) -> list[tuple[float, dict[str, Any]]]:
    """(local receive time in ms, aggTrade payload) of the next `count` trades, waiting up to `timeout_s`."""
    out: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count:
        assert time.monotonic() < deadline, f"gave up after {timeout_s:.0f} s with {len(out)} of {count} trades"
        out += await agg_messages(ws, 0.5)
    return out


async def agg_messages(ws: Any, seconds: float) -> list[tuple[float, dict[str, Any]]]:
    """(local receive time in ms, aggTrade payload) for `seconds`, from a raw or combined connection."""
    out: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
        out.append((time.time() * 1000, msg.get("data", msg)))
    return out


def test_admin_api_shows_sets_validates_and_resets(sim_server: SimServer) -> None:
    state = sim_server.admin("faults")
    assert state["rest_error_share"] == 0 and state["withheld"] == [] and state["drop_every_s"] is None
    changed = sim_server.admin("faults", {"stream_delay_ms": 250, "rest_error_statuses": [503]})
    assert changed["stream_delay_ms"] == 250 and changed["rest_error_statuses"] == [503]
    for bad, named in (({"duplicate_shar": 0.1}, "duplicate_shar"), ({"duplicate_share": 2}, "duplicate_share")):
        with pytest.raises(urllib.error.HTTPError) as error:
            sim_server.admin("faults", {"stream_delay_ms": 999, **bad})
        assert error.value.code == 400 and named in json.loads(error.value.read())["error"]
    assert sim_server.admin("faults")["stream_delay_ms"] == 250, "a rejected update changes nothing"
    reset = sim_server.admin("faults/reset", {})
    assert reset == state


def test_drop_now_cuts_streams_and_python_binance_reconnects(busy_sim_server: SimServer) -> None:
    """A drop cuts every stream; python-binance's reconnecting socket reports it and streams on.

    The socket is read all along, as a real consumer does: python-binance ends its read loop (ReadLoopClosed) once
    100 messages wait unread, which a loaded machine reaches in a second or two of not reading."""
    sim = busy_sim_server

    async def run() -> tuple[bool, list[dict[str, Any]], int]:
        client = await async_rest_client(sim.settings)
        received: list[dict[str, Any]] = []

        async def drain(stream: Any) -> None:
            while True:
                received.append(await stream.recv())

        def data_after(index: int) -> list[dict[str, Any]]:
            return [m["data"] for m in received[index:] if "data" in m]

        async def cut(ws: Any) -> bool:
            """Read until the connection ends: True if it was cut (no closing handshake)."""
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosedError:
                return True
            return False

        async def until(predicate: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 60
            while not predicate():
                assert not reader.done(), f"the python-binance socket stopped while waiting for {what}"
                assert time.monotonic() < deadline, f"gave up after 60 s waiting for {what}"
                await asyncio.sleep(0.05)

        try:
            bsm = socket_manager(client, sim.settings)
            async with (
                bsm.futures_multiplex_socket(["btcusdt@aggTrade"]) as stream,
                websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade", max_queue=None) as plain,
            ):
                reader = asyncio.create_task(drain(stream))
                try:
                    await until(lambda: len(data_after(0)) >= 1, "the first trade")
                    await asyncio.to_thread(sim.admin, "faults", {"drop_now": True})
                    plain_cut = await asyncio.wait_for(cut(plain), 60)
                    await until(lambda: any(m.get("e") == "error" for m in received), "the reconnect notice")
                    notice = next(i for i, m in enumerate(received) if m.get("e") == "error")
                    await until(lambda: len(data_after(notice)) >= 3, "trades after the reconnect")
                finally:
                    reader.cancel()
                return plain_cut, received, notice
        finally:
            await client.close_connection()

    plain_cut, messages, notice = asyncio.run(run())
    assert plain_cut, "the plain connection was cut, not closed cleanly"
    before = [m["data"]["a"] for m in messages[:notice] if "data" in m]
    after = [m["data"]["a"] for m in messages[notice:] if "data" in m]
    assert before and len(after) >= 3 and after[-1] > before[-1], "python-binance reconnected and kept receiving"
    assert sim.admin("stats")["market_streams"]["drops"] >= 1


def test_drop_every_n_seconds(busy_sim_server: SimServer) -> None:
    sim = busy_sim_server
    before = sim.admin("stats")["market_streams"]["drops"]
    sim.admin("faults", {"drop_every_s": 0.7})

    async def run() -> list[int | None]:
        """Connect again after every cut, three times; each connection is cut without a closing handshake."""
        codes: list[int | None] = []
        for _ in range(3):
            async with websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade", max_queue=None) as ws:
                await asyncio.wait_for(ws.wait_closed(), 60)
                codes.append(ws.close_code)
        return codes

    assert asyncio.run(run()) == [1006, 1006, 1006]
    assert sim.admin("stats")["market_streams"]["drops"] >= before + 3


def test_stream_delay(busy_sim_server: SimServer) -> None:
    sim = busy_sim_server

    async def run() -> tuple[list[float], list[float]]:
        async with websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade") as ws:
            prompt = [t - m["E"] for t, m in await agg_until(ws, 10)]
            await asyncio.to_thread(sim.admin, "faults", {"stream_delay_ms": 1200})
            await agg_messages(ws, 1.3)  # what was already in flight
            late = await agg_until(ws, 10)
            return prompt, [t - m["E"] for t, m in late]

    prompt, late = asyncio.run(run())
    # no trade arrives sooner than the delay; without it, some do (a loaded machine delays some, never all)
    assert min(prompt) < 1100 <= min(late)


def test_a_stream_restarted_during_a_delay_gets_no_stale_messages(busy_sim_server: SimServer) -> None:
    sim = busy_sim_server
    sim.admin("faults", {"stream_delay_ms": 1500})

    async def run() -> list[int]:
        url = sim.ws_url + "/market/ws/btcusdt@aggTrade"
        async with websockets.connect(url) as first:
            await agg_messages(first, 0.5)
        await asyncio.sleep(1.0)  # trades nobody is subscribed to
        async with websockets.connect(url) as second:  # the stream restarts while the first one's output is queued
            await asyncio.to_thread(sim.admin, "faults/reset", {})
            return [m["a"] for _, m in await agg_until(second, 20)]

    ids = asyncio.run(run())
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_duplicates_and_withheld_ids(busy_sim_server: SimServer) -> None:
    sim = busy_sim_server
    client = rest_client(sim.settings)

    def withhold_ahead() -> tuple[int, int]:
        """On the server's loop: withhold four trades that lie ahead of its clock, so none has been streamed yet
        however slowly the client got here, and duplicate half of the messages from now on."""
        now = sim.clock.now_ms()
        ahead = sim.market.trades("BTCUSDT", now + 1_000, now + 60_000).agg_id
        hole = (int(ahead[0]), int(ahead[3]))
        sim.faults.update(
            {"withhold": {"symbol": "BTCUSDT", "from_id": hole[0], "to_id": hole[1]}, "duplicate_share": 0.5}
        )
        return hole

    async def run() -> tuple[tuple[int, int], list[int]]:
        async with websockets.connect(sim.ws_url + "/market/ws/btcusdt@aggTrade", max_queue=None) as ws:
            ids = [m["a"] for _, m in await agg_until(ws, 1)]
            hole = await asyncio.to_thread(sim.call, withhold_ahead)
            deadline = time.monotonic() + 90  # trades come in bursts: a quiet spell can last a while
            while ids[-1] < hole[1] + 5:
                assert time.monotonic() < deadline, f"gave up after 90 s at trade {ids[-1]}"
                ids += [m["a"] for _, m in await agg_messages(ws, 0.5)]
            return hole, ids

    hole, ids = asyncio.run(run())
    seen = set(ids)
    assert ids[0] < hole[0] and ids[-1] > hole[1]
    assert not seen & set(range(hole[0], hole[1] + 1)), "withheld ids never streamed"
    assert set(range(ids[0], hole[0])) <= seen and set(range(hole[1] + 1, ids[-1] + 1)) <= seen
    assert len(ids) > len(seen), "some messages arrived twice"
    assert ids == sorted(ids)
    rest = client.futures_aggregate_trades(symbol="BTCUSDT", fromId=hole[0], limit=4)
    assert [t["a"] for t in rest] == list(range(hole[0], hole[1] + 1)), "REST still has them"


@pytest.mark.parametrize(("status", "code"), [(500, -1000), (503, -1000), (429, -1003)])
def test_rest_errors_in_binance_shape(sim_server: SimServer, status: int, code: int) -> None:
    sim_server.admin("faults", {"rest_error_share": 1.0, "rest_error_statuses": [status]})
    with pytest.raises(BinanceAPIException) as info:
        rest_client(sim_server.settings).futures_ping()
    assert (info.value.status_code, info.value.code) == (status, code)
    assert info.value.message


def test_a_share_of_rest_calls_fail(sim_server: SimServer) -> None:
    sim_server.admin("faults", {"rest_error_share": 0.5})
    client = rest_client(sim_server.settings)
    failures = 0
    for _ in range(60):
        try:
            client.futures_ping()
        except BinanceAPIException as exc:
            assert exc.status_code in (500, 503, 429)
            failures += 1
    assert 15 <= failures <= 45


def test_order_answered_503_was_still_processed(sim_server: SimServer) -> None:
    client = rest_client(sim_server.settings, sim_server.accounts[0])
    sim_server.admin("faults", {"rest_error_share": 1.0, "rest_error_statuses": [503]})
    with pytest.raises(BinanceAPIException) as info:
        client.futures_create_order(
            symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01", newClientOrderId="fate-unknown-1"
        )
    assert (info.value.status_code, info.value.code) == (503, -1000)
    sim_server.admin("faults/reset", {})
    order = client.futures_get_order(symbol="ETHUSDT", origClientOrderId="fate-unknown-1")
    assert order["status"] == "FILLED" and order["clientOrderId"] == "fate-unknown-1"


def test_clock_skew_moves_server_time_and_recv_window_checks(sim_server: SimServer) -> None:
    client = rest_client(sim_server.settings, sim_server.accounts[0])
    sim_server.admin("faults", {"clock_skew_ms": 20_000})
    assert 19_000 <= client.futures_time()["serverTime"] - now_ms() <= 21_000
    with pytest.raises(BinanceAPIException) as behind:
        client.futures_account_balance()
    assert behind.value.code == -1021
    sim_server.admin("faults", {"clock_skew_ms": -5_000})
    with pytest.raises(BinanceAPIException) as ahead:
        client.futures_account_balance()
    assert ahead.value.code == -1021 and "ahead" in ahead.value.message
    client.timestamp_offset = client.futures_time()["serverTime"] - now_ms()  # a client that syncs copes
    assert client.futures_account_balance()[0]["asset"] == "USDT"
