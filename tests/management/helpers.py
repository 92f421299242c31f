"""Helpers for the management tests: the API's base URL and an authenticated requests session."""
from __future__ import annotations

import time
from typing import Any, Callable

import requests

TIMEOUT_S = 30  # seconds: generous, only a failing request takes that long


def base_url(broker: Any) -> str:
    return f"http://127.0.0.1:{broker.ports['management']}"


def session(user: str = "guest", password: str = "guest") -> requests.Session:
    s = requests.Session()
    s.auth = (user, password)
    return s


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
