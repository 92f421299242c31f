"""Streams written by the previous layout: a stream was a queue log in ``queues/<vhost>/<stream>``
(ENQUEUE records, id = offset, payload = the message with its arrival ``timestamp_ms``; retention
SETTLEd what it trimmed). At the first start of this layout it is moved, once, into stream
segments (persistence/FORMAT.md, "Streams written by the previous layout")."""
from __future__ import annotations

import logging
import os
import struct
from typing import Any

import msgpack

from .records import (ENQUEUE, FILE_HEADER_SIZE, SETTLE, STREAM, encode_record, file_header, scan,
                      segment_name)

#: a STREAM record's payload starts with the arrival time (FORMAT.md "Record")
_TIMESTAMP = struct.Struct(">Q")

log = logging.getLogger("manifold.persistence")

#: in a stream directory made from an old-layout queue log: the migration is complete (so the old
#: files left by a crash before their removal are removed, not migrated again)
MIGRATED_MARKER = "migrated-from-queues"


def migrate_legacy(fs: Any, legacy: str, directory: str, segment_bytes: int) -> int:
    """Move a stream the previous build kept as a queue log (``queues/<vhost>/<stream>``:
    ENQUEUE records whose id is the offset and whose payload is the message with its arrival
    timestamp; trimmed records SETTLEd) into stream segments, keeping offsets and timestamps.
    The segments are written in ``<directory>#migrating``, fsynced, then that directory is
    renamed to ``directory``; only then are the old files removed. Returns the records moved."""
    if not os.path.isdir(legacy):
        return 0
    names = fs.listdir(directory) if os.path.isdir(directory) else []
    if MIGRATED_MARKER not in names:
        if any(name.endswith(".seg") for name in names):
            log.warning("%s: old-layout stream not migrated: %s already holds records",
                        legacy, directory)
            return 0
        staging = directory + "#migrating"  # ('#' is never in a quoted name)
        fs.rmtree(staging)  # an attempt a crash cut short
        moved = _write_legacy(fs, legacy, staging, segment_bytes)
        fs.rmtree(directory)  # no records in it: at most the stored offsets of an empty stream
        fs.replace(staging, directory)
        fs.fsync_dir(os.path.dirname(directory))
        log.warning("%s: %d records of an old-layout stream moved to %s", legacy, moved,
                    directory)
    else:
        moved = 0
    fs.rmtree(legacy)
    fs.fsync_dir(os.path.dirname(legacy))
    return moved


def _write_legacy(fs: Any, legacy: str, staging: str, segment_bytes: int) -> int:
    segments = sorted(n for n in fs.listdir(legacy) if n.endswith(".seg"))
    settled: set[int] = set()
    highest = -1
    for name in segments:  # a SETTLE may sit in a later segment than its ENQUEUE
        for record in scan(fs.read_file(os.path.join(legacy, name))).records:
            highest = max(highest, record.msg_id)
            if record.kind == SETTLE:
                settled.add(record.msg_id)
    created = fs.makedirs(staging)
    out: dict[str, Any] = {"fd": None, "size": 0, "buffer": bytearray()}
    moved = 0

    def flush() -> None:
        fs.write_all(out["fd"], bytes(out["buffer"]))
        out["buffer"].clear()

    def close() -> None:
        if out["fd"] is not None:
            flush()
            fs.fsync(out["fd"])
            fs.close(out["fd"])
            out["fd"] = None

    def start(base: int) -> None:
        close()
        out["fd"] = fs.open(os.path.join(staging, segment_name(base)),
                            os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        out["buffer"] += file_header(base)
        out["size"] = FILE_HEADER_SIZE

    for name in segments:
        for record in scan(fs.read_file(os.path.join(legacy, name))).records:
            if record.kind != ENQUEUE or record.msg_id in settled:
                continue
            if out["fd"] is None or out["size"] >= segment_bytes:
                start(record.msg_id)
            try:
                stamp = int(msgpack.unpackb(record.payload, raw=True, strict_map_key=False)[5] or 0)
            except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                stamp = 0
            data = encode_record(STREAM, record.msg_id, _TIMESTAMP.pack(stamp) + record.payload)
            out["buffer"] += data
            out["size"] += len(data)
            moved += 1
            if len(out["buffer"]) >= 1 << 20:
                flush()
    if out["fd"] is None:
        start(highest + 1)  # every record trimmed: the offsets still never go back
    close()
    fs.close(fs.open(os.path.join(staging, MIGRATED_MARKER), os.O_WRONLY | os.O_CREAT))
    fs.fsync_dir(staging)
    for made in created:  # (the staging directory's own entry is made durable by the rename's)
        if made != staging:
            fs.fsync_dir(os.path.dirname(made))
    return moved


