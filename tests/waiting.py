"""Waiting in tests for a condition itself, with a generous deadline, never for time to pass (CI is a loaded
2-core machine)."""

import time
from collections.abc import Callable
from typing import Any

# How often the condition is asked again: a poll interval inside a wait bounded by its deadline, not a wait for
# time to pass (what is asserted is the condition, however long it took within the deadline).
POLL_SECONDS = 0.2


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `condition` until it is truthy (return its value); fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what}")
