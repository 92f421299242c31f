"""How the CLI shows things: ``rich`` tables for people, bare JSON for scripts, and progress bars
(rate and ETA) only when stderr is a terminal."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterable

from rich import box
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeRemainingColumn)
from rich.table import Table

#: default columns per list, in RabbitMQ's field names
COLUMNS = {
    "queues": ["vhost", "name", "type", "messages", "messages_ready", "messages_unacknowledged",
               "consumers", "message_stats.publish_details.rate",
               "message_stats.deliver_get_details.rate"],
    "exchanges": ["vhost", "name", "type", "durable", "auto_delete", "internal"],
    "bindings": ["vhost", "source", "destination", "destination_type", "routing_key"],
    "connections": ["name", "protocol", "user", "vhost", "channels", "recv_oct", "send_oct"],
    "channels": ["name", "user", "consumer_count", "messages_unacknowledged", "prefetch_count"],
    "consumers": ["queue.vhost", "queue.name", "consumer_tag", "ack_required", "prefetch_count",
                  "channel_details.connection_name"],
    "users": ["name", "tags", "hashing_algorithm"],
    "vhosts": ["name", "messages", "messages_ready", "messages_unacknowledged"],
    "permissions": ["user", "vhost", "configure", "write", "read"],
    "streams": ["vhost", "name", "messages", "message_bytes", "first_offset", "last_offset",
                "readers"],
}
#: short headings for long field names (the JSON output keeps RabbitMQ's names)
LABELS = {"messages_ready": "ready", "messages_unacknowledged": "unacked",
          "message_stats.publish_details.rate": "in/s",
          "message_stats.deliver_get_details.rate": "out/s", "destination_type": "dest type",
          "auto_delete": "auto del", "hashing_algorithm": "hashing", "consumer_count": "consumers",
          "prefetch_count": "prefetch", "channel_details.connection_name": "connection",
          "message_bytes": "bytes", "recv_oct": "recv bytes", "send_oct": "sent bytes"}
NUMERIC_HINTS = ("messages", "consumers", "rate", "oct", "channels", "count", "offset", "bytes",
                 "readers")


def _get(row: dict, dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class Output:
    def __init__(self, fmt: str):
        self.format = fmt
        # Piped tables are not cut to 80 columns: a script that greps them gets whole rows.
        self.out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def table(self, kind: str, rows: list[dict], title: str | None = None) -> None:
        if self.json:
            self.emit_json(rows)
            return
        columns = COLUMNS.get(kind) or (sorted(rows[0]) if rows else ["name"])
        for column in ("vhost", "queue.vhost"):  # one vhost for every row: say it in the title
            values = {_get(row, column) for row in rows}
            if column in columns and len(values) == 1:
                columns = [c for c in columns if c != column]
                title = title or f"{kind} in vhost {values.pop()}"
        table = Table(title=title, header_style="bold cyan", title_justify="left",
                      box=box.SIMPLE_HEAD, title_style="bold")
        for column in columns:
            label = LABELS.get(column, column.split(".")[-1])
            numeric = any(h in column for h in NUMERIC_HINTS)
            table.add_column(label, justify="right" if numeric else "left",
                             no_wrap=column in ("name", "type", "vhost"), overflow="fold",
                             min_width=len(label))
        for row in rows:
            table.add_row(*(_cell(_get(row, c)) for c in columns))
        self.out.print(table)
        if not rows:
            self.err.print(f"[dim]no {kind}[/dim]")

    def pairs(self, title: str, pairs: Iterable[tuple[str, Any]]) -> None:
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in pairs:
            table.add_row(key, _cell(value))
        self.out.print(table)

    def done(self, message: str, value: Any = None) -> None:
        """Success: a sentence for people; for scripts, ``value`` (if any) as JSON."""
        if self.json:
            if value is not None:
                self.emit_json(value)
        else:
            self.out.print(f"[green]✓[/green] {message}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}")

    def error(self, message: str) -> None:
        self.err.print(f"[red]error:[/red] {message}", highlight=False)

    def progress(self, description: str, total: int | None) -> "ProgressBar":
        return ProgressBar(description, total, enabled=self.err.is_terminal)


class ProgressBar:
    """A rich progress bar with rate and ETA on a terminal; nothing at all when piped."""

    def __init__(self, description: str, total: int | None, enabled: bool):
        self.enabled = enabled
        self._progress = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TextColumn("[cyan]{task.fields[rate]}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._task = self._progress.add_task(description, total=total, rate="")

    def __enter__(self) -> "ProgressBar":
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            task = self._progress.tasks[0]
            self._progress.advance(self._task, n)
            speed = task.speed
            self._progress.update(self._task, rate=f"{speed:,.0f} msg/s" if speed else "")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
