"""Segment files and records: the byte layout of persistence/FORMAT.md, with no I/O policy.

A segment file is a 16-byte file header followed by records. Each record carries a magic byte, a
format version, a type, its payload length, a message id and a CRC32C over header and payload.
Readers trust nothing: :func:`scan` stops at the first short, mislabelled or corrupt record and
says where, so the caller can truncate there (nats-server ``rebuildStateFromBufLocked``), with
:func:`truncate_at_problem`, which every recovery uses to cut and report the same way.
"""
from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any, Iterator

import crc32c

FILE_MAGIC = b"MFSEG\x00"
FILE_VERSION = 1
# magic(6) version(u16) base_id(u64)
FILE_HEADER = struct.Struct(">6sHQ")
FILE_HEADER_SIZE = FILE_HEADER.size  # 16

RECORD_MAGIC = 0xA7
RECORD_VERSION = 1
# magic(u8) version(u8) type(u8) flags(u8) length(u32) msg_id(u64) crc32c(u32)
RECORD_HEADER = struct.Struct(">BBBBIQI")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 20
# The CRC covers the first 16 header bytes (everything but the CRC itself) and the payload.
_CRC_COVERED = 16

ENQUEUE = 1  # payload: the encoded message
SETTLE = 2   # payload: empty; msg_id names the enqueue it cancels
STREAM = 3   # payload: timestamp_ms (u64) then the encoded message; msg_id is the stream offset
#: a queued message's receive state (SQS receives, queues with a delivery limit): payload
#: MARK_PAYLOAD; msg_id names the ENQUEUE (in this or an earlier segment) it describes, and the
#: latest MARK of a message wins
MARK = 4
#: receive count (u32), invisible until (u64, ms since the epoch; 0: visible), first receive
#: (u64, ms since the epoch; 0: unknown)
MARK_PAYLOAD = struct.Struct(">IQQ")
#: the record kinds a segment may hold
KINDS = (ENQUEUE, SETTLE, STREAM, MARK)
MAX_PAYLOAD = 1 << 30
#: record flag: recovery reads this ENQUEUE's payload even past the resident budget, because the
#: queue needs something inside the message before delivery (its per-message expiration)
FLAG_READ_ON_RECOVERY = 0x01


def segment_name(base_id: int) -> str:
    """Kafka's convention: the base id, zero-padded to 20 digits."""
    return f"{base_id:020d}.seg"


def file_header(base_id: int) -> bytes:
    return FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, base_id)


def parse_file_header(data: bytes) -> int | None:
    """The segment's base id, or None if the header is missing or foreign."""
    if len(data) < FILE_HEADER_SIZE:
        return None
    magic, version, base_id = FILE_HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC or version != FILE_VERSION:
        return None
    return base_id


def encode_record(kind: int, msg_id: int, payload: bytes = b"", flags: int = 0) -> bytes:
    head = struct.pack(">BBBBIQ", RECORD_MAGIC, RECORD_VERSION, kind, flags, len(payload), msg_id)
    crc = crc32c.crc32c(payload, crc32c.crc32c(head))
    return head + struct.pack(">I", crc) + payload


#: a SETTLE record is these 8 bytes, the id (u64) and the CRC32C of the 16 before it, which
#: continues from the CRC of these 8 (computed once)
_SETTLE_START = struct.pack(">BBBBI", RECORD_MAGIC, RECORD_VERSION, SETTLE, 0, 0)
_SETTLE_START_CRC = crc32c.crc32c(_SETTLE_START)


def append_settle(buffer: bytearray, msg_id: int) -> int:
    """Append ``encode_record(SETTLE, msg_id)`` to ``buffer`` (once per ack: its own, short
    path); returns its length."""
    id_bytes = msg_id.to_bytes(8, "big")
    buffer += _SETTLE_START
    buffer += id_bytes
    buffer += crc32c.crc32c(id_bytes, _SETTLE_START_CRC).to_bytes(4, "big")
    return RECORD_HEADER_SIZE


_pack_head = struct.Struct(">BBBBIQ").pack
_pack_crc = struct.Struct(">I").pack
_crc32c = crc32c.crc32c


def append_record(buffer: bytearray, kind: int, msg_id: int, payload: bytes = b"",
                  flags: int = 0) -> int:
    """Append the record :func:`encode_record` makes to ``buffer`` (without building it apart
    first: this is on the path of every persistent message and every ack); returns its length."""
    head = _pack_head(RECORD_MAGIC, RECORD_VERSION, kind, flags, len(payload), msg_id)
    buffer += head
    buffer += _pack_crc(_crc32c(payload, _crc32c(head)) if payload else _crc32c(head))
    buffer += payload
    return RECORD_HEADER_SIZE + len(payload)


@dataclass
class Record:
    kind: int
    msg_id: int
    payload: bytes
    position: int  # byte offset of the record in its file


@dataclass
class ScanResult:
    records: list[Record]
    good_bytes: int          # the file is valid up to here; anything after is to be truncated
    problem: str | None      # why the scan stopped early, if it did


def scan(data: bytes) -> ScanResult:
    """Parse a whole segment file's bytes (header included)."""
    if parse_file_header(data) is None:
        return ScanResult([], 0, "missing or unknown segment header")
    records: list[Record] = []
    pos = FILE_HEADER_SIZE
    view = memoryview(data)
    end = len(data)
    while pos < end:
        if end - pos < RECORD_HEADER_SIZE:
            return ScanResult(records, pos, f"torn record header at byte {pos}")
        magic, version, kind, _flags, length, msg_id, crc = RECORD_HEADER.unpack_from(data, pos)
        if (magic != RECORD_MAGIC or version != RECORD_VERSION or
                kind not in KINDS):
            return ScanResult(records, pos, f"bad record header at byte {pos}")
        if length > MAX_PAYLOAD:
            return ScanResult(records, pos, f"implausible record length {length} at byte {pos}")
        body_at = pos + RECORD_HEADER_SIZE
        if end - body_at < length:
            return ScanResult(records, pos, f"torn record at byte {pos}")
        payload = view[body_at:body_at + length]
        expected = crc32c.crc32c(payload, crc32c.crc32c(view[pos:pos + _CRC_COVERED]))
        if expected != crc:
            return ScanResult(records, pos, f"CRC mismatch in record at byte {pos}")
        records.append(Record(kind, msg_id, bytes(payload), pos))
        pos = body_at + length
    return ScanResult(records, pos, None)


class Walk:
    """Iterate a segment's records as ``(kind, msg_id, position, payload_length, flags)`` without
    copying payloads (recovery of a long queue needs no object per message); after the loop,
    ``good_bytes``, ``problem`` and ``dropped`` say where and why it stopped, as :func:`scan`."""

    def __init__(self, data: bytes):
        self.data = data
        self.good_bytes = 0
        self.problem: str | None = None
        self.dropped = 0

    def __iter__(self) -> Iterator[tuple[int, int, int, int, int]]:
        data = self.data
        end = len(data)
        if parse_file_header(data) is None:
            self.problem = "missing or unknown segment header"
            self.dropped = end
            return
        pos = FILE_HEADER_SIZE
        view = memoryview(data)
        crc = crc32c.crc32c
        unpack = RECORD_HEADER.unpack_from
        while pos < end:
            if end - pos < RECORD_HEADER_SIZE:
                self.problem = f"torn record header at byte {pos}"
                break
            magic, version, kind, flags, length, msg_id, stored = unpack(data, pos)
            if (magic != RECORD_MAGIC or version != RECORD_VERSION or
                    kind not in KINDS):
                self.problem = f"bad record header at byte {pos}"
                break
            if length > MAX_PAYLOAD:
                self.problem = f"implausible record length {length} at byte {pos}"
                break
            body_at = pos + RECORD_HEADER_SIZE
            if end - body_at < length:
                self.problem = f"torn record at byte {pos}"
                break
            if crc(view[body_at:body_at + length], crc(view[pos:pos + _CRC_COVERED])) != stored:
                self.problem = f"CRC mismatch in record at byte {pos}"
                break
            yield kind, msg_id, pos, length, flags
            pos = body_at + length
        view.release()
        self.good_bytes = pos
        self.dropped = end - pos


def truncate_at_problem(fs: Any, path: str, problem: str, good_bytes: int, dropped: int,
                        problems: list[str]) -> None:
    """Recovery found ``problem`` in the segment file ``path``: cut it back to its last good
    record (nothing after the first bad one is trusted) and add what was dropped to
    ``problems`` (the recovering log reports them)."""
    problems.append(f"{path}: {problem}; truncated, {dropped} bytes dropped")
    fs.truncate_file(path, good_bytes)


# ------------------------------------------------------------------ index arrays on disk
def array_to_disk(values: array) -> bytes:
    """An array's bytes big-endian, as every integer on disk is (index files)."""
    if sys.byteorder == "little":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def array_from_disk(typecode: str, data: bytes | memoryview) -> array:
    """The array whose big-endian bytes are ``data``."""
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "little":
        values.byteswap()
    return values
