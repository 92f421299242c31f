"""RabbitMQ's list query parameters: ``sort``, ``sort_reverse``, ``columns``, and paging
(``page``, ``page_size``, ``name``, ``use_regex``) which wraps the list in a page object."""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Iterable

from aiohttp import web

from .errors import json_error

MAX_PAGE_SIZE = 500
CHUNK_ROWS = 2000


def truthy(value: Any) -> bool:
    """rabbitmqadmin sends booleans as strings ("true"); JSON clients send true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _get_path(item: dict, dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _select(item: dict, columns: list[str]) -> dict:
    out: dict = {}
    for column in columns:
        parts = column.split(".")
        value = _get_path(item, column)
        if value is None and not _has_path(item, parts):
            continue
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def _has_path(item: dict, parts: list[str]) -> bool:
    value: Any = item
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _sort_key(column: str):
    def key(item: dict) -> tuple:
        value = _get_path(item, column)
        if value is None:
            return (0, 0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (1, value, "")
        return (2, 0, str(value))
    return key


async def collect(items: Iterable[dict]) -> list[dict]:
    """Build the rows in slices, letting the event loop serve clients between them: 100,000
    queues take about a second to describe, which must not be one stall of the broker."""
    rows: list[dict] = []
    for row in items:
        rows.append(row)
        if len(rows) % CHUNK_ROWS == 0:
            await asyncio.sleep(0)
    return rows


async def encode_rows(rows: list[dict]) -> str:
    """A JSON array encoded in slices, yielding between them (the C encoder holds the GIL, so
    a worker thread would stall the loop just the same)."""
    parts = []
    for start in range(0, len(rows), CHUNK_ROWS):
        parts.append(json.dumps(rows[start:start + CHUNK_ROWS])[1:-1])
        await asyncio.sleep(0)
    return "[" + ",".join(p for p in parts if p) + "]"


async def json_response(value: Any, rows: int) -> web.Response:
    if rows < CHUNK_ROWS:
        return web.json_response(value)
    if isinstance(value, list):
        body = await encode_rows(value)
    else:  # a page object: only its items can be long
        items = await encode_rows(value["items"])
        body = json.dumps({**value, "items": None}).replace('"items": null', '"items": ' + items, 1)
    return web.Response(text=body, content_type="application/json")


async def respond(request: web.Request, items: Iterable[dict]) -> web.Response:
    """Apply the query's filter, sort, page and columns to ``items`` and answer in JSON."""
    query = request.query
    rows = await collect(items)
    paged = "page" in query
    total = len(rows)
    name_filter = query.get("name")
    if name_filter:
        if truthy(query.get("use_regex", "false")):
            try:
                pattern = re.compile(name_filter)
            except re.error as exc:
                raise json_error(400, "bad_request", f"bad name regex: {exc}")
            rows = [r for r in rows if pattern.search(str(r.get("name", "")))]
        else:
            needle = name_filter.lower()
            rows = [r for r in rows if needle in str(r.get("name", "")).lower()]
    sort = query.get("sort")
    if sort:
        rows.sort(key=_sort_key(sort), reverse=truthy(query.get("sort_reverse", "false")))
    columns = [c for c in query.get("columns", "").split(",") if c]
    if not paged:
        if columns:
            rows = await collect(_select(r, columns) for r in rows)
        return await json_response(rows, len(rows))
    try:
        page = int(query.get("page", "1"))
        page_size = int(query.get("page_size", "100"))
    except ValueError:
        raise json_error(400, "bad_request", "page and page_size must be integers")
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise json_error(400, "bad_request",
                         f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}")
    filtered = len(rows)
    page_count = max(1, -(-filtered // page_size))
    chunk = rows[(page - 1) * page_size: page * page_size]
    if columns:
        chunk = [_select(r, columns) for r in chunk]
    return await json_response({"filtered_count": filtered, "item_count": len(chunk),
                              "items": chunk, "page": page, "page_count": page_count,
                              "page_size": page_size, "total_count": total}, len(chunk))
