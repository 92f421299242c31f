"""Read-only views that adapters offer to the operator, by name.

An adapter that keeps state of its own (the AWS APIs' SQS queues, SNS topics, Kinesis shards)
registers one callable per view when it installs; the management API serves each as
``GET /api/manifold/<name>`` without importing the adapter (adapters stay independent of each
other, see pyproject's import-linter contracts). A view returns a list of rows: dicts of plain
JSON values (the management API filters, sorts and pages them), built fresh on every call; it
must not change anything.
"""
from __future__ import annotations

from typing import Any, Callable

View = Callable[[], Any]


class Views:
    def __init__(self) -> None:
        self._views: dict[str, View] = {}

    def register(self, name: str, view: View) -> None:
        """Add (or replace: a restarted listener registers again) the view ``name``."""
        self._views[name.strip("/")] = view

    def get(self, name: str) -> View | None:
        return self._views.get(name.strip("/"))

    def names(self) -> list[str]:
        return sorted(self._views)
