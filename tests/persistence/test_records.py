"""Segment bytes: every truncation and every bit flip is survived, and only good records are kept."""
import random

from manifold.persistence.records import (ENQUEUE, FILE_HEADER_SIZE, RECORD_HEADER_SIZE, SETTLE,
                                          encode_record, file_header, scan)


def segment(n=5):
    data = bytearray(file_header(1))
    bounds = [len(data)]
    for i in range(1, n + 1):
        data += encode_record(ENQUEUE, i, f"message {i}".encode() * i)
        bounds.append(len(data))
    data += encode_record(SETTLE, 2)
    bounds.append(len(data))
    return bytes(data), bounds


def test_whole_segment_scans_clean():
    data, bounds = segment()
    result = scan(data)
    assert result.problem is None and result.good_bytes == len(data)
    assert [(r.kind, r.msg_id) for r in result.records] == [(ENQUEUE, i) for i in range(1, 6)] + [(SETTLE, 2)]
    assert result.records[2].payload == b"message 3" * 3


def test_truncation_at_every_byte_keeps_exactly_the_whole_records():
    data, bounds = segment()
    for cut in range(len(data)):
        result = scan(data[:cut])
        if cut < FILE_HEADER_SIZE:
            assert result.records == [] and result.good_bytes == 0
            continue
        whole = sum(1 for b in bounds[1:] if b <= cut)
        assert len(result.records) == whole, cut
        assert result.good_bytes == bounds[whole]
        assert (result.problem is None) == (cut == bounds[whole])


def test_bit_flips_stop_the_scan_at_the_damaged_record():
    data, bounds = segment()
    rng = random.Random(1)
    for _ in range(300):
        pos = rng.randrange(FILE_HEADER_SIZE, len(data))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        result = scan(bytes(flipped))
        damaged = max(i for i, b in enumerate(bounds) if b <= pos)
        assert len(result.records) == damaged, pos
        assert result.problem is not None and result.good_bytes == bounds[damaged]


def test_foreign_file_is_refused():
    assert scan(b"not a segment at all, sorry").problem is not None


def test_appended_records_are_the_encoded_ones():
    """The hot paths append records into a chunk's buffer (append_record, append_settle): the
    bytes are exactly encode_record's, whatever the id, flags or payload."""
    from manifold.persistence.records import append_record, append_settle
    for msg_id in (0, 1, 255, 2 ** 32, 2 ** 63 - 1):
        buffer = bytearray(b"before")
        assert append_settle(buffer, msg_id) == RECORD_HEADER_SIZE
        assert bytes(buffer) == b"before" + encode_record(SETTLE, msg_id)
        for payload, flags in ((b"", 0), (b"body", 1), (bytes(range(256)) * 5, 0)):
            buffer = bytearray()
            assert append_record(buffer, ENQUEUE, msg_id, payload, flags) == len(buffer)
            assert bytes(buffer) == encode_record(ENQUEUE, msg_id, payload, flags)
