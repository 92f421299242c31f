"""Every store implements the whole ``Store`` protocol (and its logs the whole ``Log``), so the
core calls them without ``getattr`` probes."""
from __future__ import annotations

import inspect

import pytest

from manifold.persistence.filestore import FileStore
from manifold.persistence.store import Log, MemoryStore, Store
from tests.fakes import FakeStore, MemoryLog, PendingLog, PowerCutLog


def _members(protocol: type) -> set[str]:
    names = {n for n, v in vars(protocol).items()
             if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names | set(getattr(protocol, "__annotations__", {}))


def test_protocols_are_not_empty():
    assert {"queue_log", "state_log", "spill_log", "fsync_latency"} <= _members(Store)
    assert {"append", "settle", "recover", "read", "holds", "max_id_seen"} <= _members(Log)


@pytest.mark.parametrize("make", [MemoryStore, FakeStore, lambda: FileStore("/nonexistent")])
def test_stores_implement_store(make):
    store = make()
    missing = [name for name in _members(Store) if not hasattr(store, name)]
    assert missing == []
    for name in _members(Store) - {"fsync_latency"}:
        ours, theirs = inspect.signature(getattr(store, name)), getattr(Store, name)
        assert list(ours.parameters) == list(inspect.signature(theirs).parameters)[1:], name


@pytest.mark.parametrize("make", [MemoryLog, PowerCutLog,
                                  PendingLog,
                                  lambda: FileStore("/nonexistent").queue_log("/", "q")])
def test_logs_implement_log(make):
    log = make()
    assert [name for name in _members(Log) if not hasattr(log, name)] == []
    assert log.max_id_seen == -1
