"""Kinesis streams and shards as plain data: hash ranges, sequence numbers, shard iterators.

A Kinesis stream is a list of shards; each shard owns a contiguous range of the 128-bit hash-key
space and is one core stream named ``STREAM.SHARD_ID``. A record's hash key is the MD5 of its
partition key read as a big-endian integer (or its ExplicitHashKey), and it goes to the open
shard whose range holds it.

Sequence numbers are decimal strings that name the shard and the record's offset in the core
stream: ``"49" + shard index (10 digits) + offset (20 digits)``. They increase within a shard, and
a child shard (higher index) sorts after its parents, as in Kinesis.

Shard iterators are opaque tokens: base64 of ``stream|creation ms|shard|offset|issued ms``; they
expire after ``[kinesis] iterator_ttl_s`` (Kinesis: 5 minutes).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .http import ACCOUNT_ID, REGION, AwsError

MAX_HASH_KEY = 2 ** 128 - 1
_SEQ_PREFIX = "49"


def invalid(message: str) -> AwsError:
    return AwsError("InvalidArgumentException", message)


def hash_key_of(partition_key: str) -> int:
    """[Kinesis PutRecord] MD5 maps the partition key to a 128-bit integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def sequence_number(shard_index: int, offset: int) -> str:
    return f"{_SEQ_PREFIX}{shard_index:010d}{offset:020d}"


def parse_sequence_number(text: Any) -> tuple[int, int]:
    """(shard index, offset) of a sequence number this server issued."""
    if not isinstance(text, str) or len(text) != 32 or not text.isdigit() or \
            not text.startswith(_SEQ_PREFIX):
        raise invalid(f"StartingSequenceNumber {text} used in GetShardIterator on shard is "
                      "invalid.")
    return int(text[2:12]), int(text[12:])


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT_ID}:stream/{name}"


@dataclass
class Shard:
    index: int
    start_hash: int
    end_hash: int
    parent: str | None = None
    adjacent_parent: str | None = None
    #: the core stream's next offset when the shard closed (exclusive end), None while open
    end_offset: int | None = None

    @property
    def id(self) -> str:
        return shard_id(self.index)

    @property
    def open(self) -> bool:
        return self.end_offset is None

    def holds(self, hash_key: int) -> bool:
        return self.start_hash <= hash_key <= self.end_hash

    def describe(self) -> dict:
        out: dict[str, Any] = {
            "ShardId": self.id,
            "HashKeyRange": {"StartingHashKey": str(self.start_hash),
                             "EndingHashKey": str(self.end_hash)},
            "SequenceNumberRange": {"StartingSequenceNumber": sequence_number(self.index, 0)},
        }
        if self.parent:
            out["ParentShardId"] = self.parent
        if self.adjacent_parent:
            out["AdjacentParentShardId"] = self.adjacent_parent
        if self.end_offset is not None:
            out["SequenceNumberRange"]["EndingSequenceNumber"] = sequence_number(
                self.index, max(self.end_offset - 1, 0))
        return out


@dataclass
class KinesisStream:
    name: str
    created_ms: int
    retention_hours: int = 24
    mode: str = "PROVISIONED"
    shards: list[Shard] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    next_index: int = 0
    #: enhanced fan-out consumers: name -> creation time (ms)
    consumers: dict[str, int] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return stream_arn(self.name)

    def queue_name(self, shard: Shard) -> str:
        return f"{self.name}.{shard.id}"

    def open_shards(self) -> list[Shard]:
        return [s for s in self.shards if s.open]

    def shard(self, sid: Any) -> Shard:
        for shard in self.shards:
            if shard.id == sid:
                return shard
        raise AwsError("ResourceNotFoundException",
                       f"Could not find shard {sid} in stream {self.name} under account "
                       f"{ACCOUNT_ID}.")

    def shard_for(self, hash_key: int) -> Shard:
        for shard in self.shards:
            if shard.open and shard.holds(hash_key):
                return shard
        raise AwsError("InternalFailure", "no open shard holds the hash key", 500, sender=False)

    def new_shard(self, start: int, end: int, parent: str | None = None,
                  adjacent: str | None = None) -> Shard:
        shard = Shard(self.next_index, start, end, parent, adjacent)
        self.next_index += 1
        self.shards.append(shard)
        return shard

    def add_even_shards(self, count: int) -> list[Shard]:
        """``count`` shards splitting the hash-key space evenly, as CreateStream does."""
        width = (MAX_HASH_KEY + 1) // count
        made = []
        for i in range(count):
            end = MAX_HASH_KEY if i == count - 1 else (i + 1) * width - 1
            made.append(self.new_shard(i * width, end))
        return made

    def children_of(self, shard: Shard) -> list[Shard]:
        return [s for s in self.shards if shard.id in (s.parent, s.adjacent_parent)]

    # -- persistence (a DurableMap value) ------------------------------------------------------
    def to_value(self) -> dict:
        value = asdict(self)
        # msgpack integers stop at 64 bits: hash keys travel as text
        value["shards"] = [{**s, "start_hash": str(s["start_hash"]), "end_hash": str(s["end_hash"])}
                           for s in value["shards"]]
        return value

    @classmethod
    def from_value(cls, value: dict) -> "KinesisStream":
        shards = [Shard(**{**s, "start_hash": int(s["start_hash"]), "end_hash": int(s["end_hash"])})
                  for s in value.get("shards", [])]
        return cls(**{**value, "shards": shards})


# ---------------------------------------------------------------- iterators
def make_iterator(stream: KinesisStream, shard: Shard, offset: int, now_ms: int) -> str:
    raw = f"{stream.name}|{stream.created_ms}|{shard.id}|{offset}|{now_ms}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def parse_iterator(token: Any) -> tuple[str, int, str, int, int]:
    """(stream, stream creation ms, shard id, offset, issued ms)."""
    try:
        raw = base64.urlsafe_b64decode(str(token).encode()).decode()
        name, created, sid, offset, issued = raw.rsplit("|", 4)
        return name, int(created), sid, int(offset), int(issued)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid(f"Invalid ShardIterator: {str(token)[:64]}") from None
