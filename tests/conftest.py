"""Shared fixtures: a real broker on ephemeral ports, running its own event loop in a thread, so
that blocking clients (pika, paho-mqtt, stomp.py) and asyncio clients (aio-pika, aiormq, amqtt)
alike talk to it over real sockets."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from manifold.broker.service import Service
from manifold.config.settings import Settings


# Property tests: "ci" (the default) runs the same examples every time, so the suite's result
# does not depend on the draw: a failure is a change in the code, reproducible by rerunning.
# A loaded machine is slow, not wrong: no per-example deadline, no too-slow health check.
# `HYPOTHESIS_PROFILE=explore` draws fresh random examples on every run, to look for new bugs.
# (The same as Hypothesis's own "ci" profile, which it picks only where it sees a CI variable.)
hypothesis_settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile(
    "explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class RunningBroker:
    """A Service on 127.0.0.1 with every port chosen by the kernel.

    ``ports`` maps protocol -> port. ``call(fn)`` runs ``fn()`` on the broker's loop and returns its
    result, for tests that inspect the core (never touch core objects from the test thread)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.service = Service(settings)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.host = "127.0.0.1"

    def start(self) -> "RunningBroker":
        self.thread.start()
        # Generous: a loaded machine can take seconds to open the store and bind the listeners.
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(60)
        return self

    @property
    def ports(self) -> dict[str, int]:
        return self.service.ports

    @property
    def broker(self):
        return self.service.broker

    def call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the test thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def stop(self) -> None:
        try:
            # Generous: a loaded machine can stall the final fsync for seconds.
            asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


def broker_settings(tmp_path, **sections: dict) -> Settings:
    settings = Settings().replace("server", data_dir=str(tmp_path / "data"), bind="127.0.0.1",
                                  shutdown_grace_s=1.0)
    for listener in ("amqp", "mqtt", "stomp", "http", "management", "websocket"):
        settings = settings.replace(listener, port=0)
    for section, values in sections.items():
        if isinstance(values, list):  # an array of tables: users=[{...}], permissions=[...]
            settings = settings.with_tables(section, values)
        else:
            settings = settings.replace(section, **values)
    return settings


@pytest.fixture
def make_broker(tmp_path):
    """Start a broker with settings overrides: ``make_broker(amqp={"heartbeat_s": 1})``."""
    started: list[RunningBroker] = []

    def make(**sections: dict) -> RunningBroker:
        running = RunningBroker(broker_settings(tmp_path, **sections)).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def running_broker(make_broker) -> RunningBroker:
    return make_broker()
