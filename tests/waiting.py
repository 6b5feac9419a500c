"""Waiting in tests for a condition itself, with a generous deadline, never for time to pass (CI is a loaded
2-core machine)."""

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `condition` until it is truthy (return its value); fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
