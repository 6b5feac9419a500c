"""The collector on a data directory that refuses writes, and `lsq collect` facing an unreachable exchange: one clear
line instead of tracebacks, and on a full disk nothing lost.

The disk tests use a real small filesystem (a tmpfs mounted for the test), so they need root and skip without it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_collector import (
    FAST_LIMITS,
    assert_store_matches_exchange,
    collector_settings,
    first_window,
    proven_end,
    run_collector,
    settled_books,
    until,
)

from collectors.daemon import Collector, CollectorOptions
from collectors.status import format_status, read_status
from lsq.paths import DataPaths

LSQ = str(Path(sys.executable).with_name("lsq"))


@contextmanager
def small_filesystem(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` for the duration (skips when this process may not mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lsq_collect(tmp_path: Path, data: Path, rest_url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "lsq.yaml"
    endpoints = {"rest_url": rest_url, "ws_url": rest_url.replace("http", "ws"), "data_url": rest_url + "/data"}
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(data)}, "binance": {"mock": endpoints}}))
    env = {**os.environ, "LSQ_CONFIG": str(config)}
    return subprocess.run([LSQ, "collect"], env=env, capture_output=True, text=True, timeout=60)


def _problems(stderr: str) -> list[str]:
    """The lines that are not routine INFO log lines."""
    return [line for line in stderr.splitlines() if line.strip() and " INFO " not in line]


def test_a_read_only_data_directory_is_refused_with_one_line(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "data", "ro,size=1m") as data:
        run = _lsq_collect(tmp_path, data, f"http://127.0.0.1:{_closed_port()}")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (line,) = _problems(run.stderr)
    assert line.startswith("lsq collect: data directory") and str(data) in line and "not writable" in line


def test_an_unreachable_exchange_is_one_line_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    run = _lsq_collect(tmp_path, tmp_path / "data", url)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    (line,) = _problems(run.stderr)
    assert line.startswith("lsq collect: cannot reach the exchange at") and url in line


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to give the space back)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _status_on_disk(path: Path) -> dict[str, Any]:
    try:
        return read_status(path) or {}
    except ValueError:  # caught mid-rewrite (the in-place fallback is not atomic)
        return {}


def test_a_full_disk_keeps_trades_in_memory_bounded_and_loses_nothing(
    make_sim_server: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills up while collecting: flushes fail, trades stay in memory up to the bound and beyond it are left
    as id gaps; the status file and `lsq status` say so, the log says it once; when space returns everything is
    written (the gaps fetched by REST) and the store equals the exchange."""
    sim = make_sim_server(symbols=4, limits=FAST_LIMITS, firehose=2.0)
    symbols = sorted(sim.market.instruments)
    bound = 300
    seen: dict[str, Any] = {}
    caplog.set_level(logging.WARNING, logger="collectors")

    with small_filesystem(tmp_path / "data", "size=16m") as data:
        paths = DataPaths(data)

        async def fill_then_free(collector: Collector) -> None:
            await until(lambda: settled_books(collector, symbols) and collector.rows_flushed > 0, "collecting")
            filler = _fill(data)
            await until(lambda: collector.flusher.refusing, "the buffer bound reached while the disk is full")
            seen["at_bound"] = sum(b.buffered for b in collector.books.values())
            await until(
                lambda: _status_on_disk(paths.collector_status).get("storage", {}).get("refusing_new_trades") is True,
                "the status file reporting the full disk",
            )
            seen["status"] = _status_on_disk(paths.collector_status)
            seen["buffered"] = sum(b.buffered for b in collector.books.values())
            filler.unlink()
            await until(lambda: collector.flusher.trouble is None, "writing again")
            await until(lambda: settled_books(collector, symbols), "the gaps left while full repaired")
            seen["end"] = proven_end(collector, symbols, sim.clock.now_ms())

        collector = run_collector(
            collector_settings(sim, data), CollectorOptions(max_buffered_rows=bound), 0.5, during=fill_then_free
        )
        storage = seen["status"]["storage"]
        assert storage["state"] == "disk full" and storage["max_buffered_rows"] == bound
        assert storage["buffered_rows"] >= bound
        assert seen["buffered"] <= seen["at_bound"]  # bounded: nothing more is kept once the bound is reached
        assert "CANNOT WRITE" in format_status(seen["status"]) and "disk full" in format_status(seen["status"])
        full = [r for r in caplog.records if "cannot write to" in r.getMessage()]
        assert len(full) == 1, [r.getMessage() for r in full]  # said once, not once per flush
        assert any("writable again" in r.getMessage() for r in caplog.records)
        assert collector.status()["storage"]["state"] == "ok"
        assert assert_store_matches_exchange(data, sim.market, symbols, first_window(collector), seen["end"]) > 0
