"""Keeping the simulator's resident size down on glibc: few malloc arenas, and freed memory handed back.

The server generates whole symbol-days of trades (tens of MB of numpy temporaries) in several threads. glibc gives
each thread its own arena and keeps what was freed there, so without these the process grows by a few hundred MB
of memory it no longer uses. Elsewhere (macOS, musl) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> None:
    """Cap malloc arenas (call before worker threads start; effective for arenas created afterwards)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.debug("mallopt(M_ARENA_MAX) was refused")


def trim() -> None:
    """Return freed heap memory to the operating system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
