"""Minimal raw-socket MQTT load generator (3.1.1, or 5.0 with --mqtt-version 5): publish ->
consume messages per second.

One subscriber connection (SUBSCRIBE at --qos) and one publisher connection (PUBLISH at --qos)
on a fresh topic. Frames are encoded once up front (QoS 1: one frame per packet identifier), the
subscriber only walks packet boundaries (and answers PUBACK at QoS 1), so the generator spends
as little CPU as possible and the broker is what is measured. At most --window messages are
published and not yet consumed (end-to-end flow control: no broker is pushed into dropping or
unbounded queueing). The clock runs from the first timed PUBLISH to the last message received;
a warm-up of --warmup messages runs first and is not timed. With MQTT 5 the publisher also keeps
to the server's Receive Maximum (CONNACK property) [MQTT-3.3.4-7].

Prints one JSON object on stdout, e.g.
    {"protocol": "mqtt", "qos": 0, "messages": 20000, "received": 20000, "seconds": 0.8,
     "msgs_per_s": 25000.0, "complete": true}
Exit status 0 when every message arrived, 1 otherwise (the JSON says what happened).

    .venv/bin/python benchmarks/gen_mqtt.py --host 127.0.0.1 --port 1883 --qos 1 --messages 20000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from benchkit import GeneratorProtocol, install_uvloop, wait_for_progress, warm_then_measure  # noqa: E402


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_frame(client_id: str, keepalive_s: int = 60, version: int = 4) -> bytes:
    # [MQTT-3.1.2-2] protocol level 4 = 3.1.1, 5 = 5.0; flags 0x02 = clean session/start, no
    # credentials; MQTT 5 adds an (empty) property length after the keep alive.
    props = b"\x00" if version == 5 else b""
    return packet(0x10, _str(b"MQTT") + bytes([version, 0x02]) + struct.pack("!H", keepalive_s)
                  + props + _str(client_id.encode()))


def subscribe_frame(packet_id: int, topic: bytes, qos: int, version: int = 4) -> bytes:
    props = b"\x00" if version == 5 else b""
    return packet(0x82, struct.pack("!H", packet_id) + props + _str(topic) + bytes([qos]))


def publish_frame(topic: bytes, payload: bytes, qos: int, packet_id: int = 0,
                  version: int = 4) -> bytes:
    props = b"\x00" if version == 5 else b""
    if qos == 0:
        return packet(0x30, _str(topic) + props + payload)
    return packet(0x30 | (qos << 1), _str(topic) + struct.pack("!H", packet_id) + props
                  + payload)


# MQTT 5 property identifier -> value kind, for the properties a CONNACK may carry.
_PROP_KINDS = {0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x12: "s", 0x22: 2, 0x1F: "s",
               0x26: "ss", 0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2, 0x1A: "s", 0x1C: "s",
               0x15: "s", 0x16: "s"}


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, mult = 0, 1
    while True:
        b = data[i]
        value += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            return value, i


def parse_connack(raw: bytes, version: int = 4) -> tuple[int, dict[int, object]]:
    """(return/reason code, {property id: value}) of a whole CONNACK packet."""
    _, i = _read_varint(raw, 1)
    code = raw[i + 1]
    props: dict[int, object] = {}
    if version == 5 and len(raw) > i + 2:
        length, j = _read_varint(raw, i + 2)
        end = j + length
        while j < end:
            pid = raw[j]
            j += 1
            kind = _PROP_KINDS.get(pid)
            if kind is None:
                break  # unknown property: stop reading, keep what we have
            if isinstance(kind, int):
                props[pid] = int.from_bytes(raw[j:j + kind], "big")
                j += kind
            else:
                for _ in kind:
                    n = int.from_bytes(raw[j:j + 2], "big")
                    props[pid] = raw[j + 2:j + 2 + n]
                    j += 2 + n
    return code, props


DISCONNECT = b"\xe0\x00"


class MqttReader(GeneratorProtocol):
    """Walks MQTT packet boundaries; counts PUBLISH (answering PUBACK) and PUBACK packets."""

    def __init__(self, progress: asyncio.Event):
        super().__init__(progress)
        self.publishes = 0
        self.pubacks = 0

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        acks = []
        publishes = pubacks = 0
        while end - pos >= 2:
            first = buf[pos]
            # remaining length: 1..4 bytes, 7 bits each [MQTT-2.2.3]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                b = buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if length < 0 or i + length > end:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                publishes += 1
                if first & 0x06:  # QoS > 0: packet id follows the topic name
                    tlen = (buf[i] << 8) | buf[i + 1]
                    pid = buf[i + 2 + tlen:i + 4 + tlen]
                    acks.append(b"\x40\x02" + bytes(pid))
            elif kind == 4:  # PUBACK
                pubacks += 1
            else:  # CONNACK, SUBACK, PINGRESP...: rare, handled by the coroutine
                self.control.put_nowait(bytes(buf[pos:i + length]))
            pos = i + length
        if pos:
            del buf[:pos]
        if acks:
            self.transport.write(b"".join(acks))
        if publishes or pubacks:
            self.publishes += publishes
            self.pubacks += pubacks
            self.progress.set()


async def open_client(host: str, port: int, client_id: str, progress: asyncio.Event,
                      timeout: float, version: int = 4) -> MqttReader:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: MqttReader(progress), host, port), timeout)
    proto.transport.write(connect_frame(client_id, version=version))
    reply = await asyncio.wait_for(proto.control.get(), timeout)
    if not reply or reply[0] >> 4 != 2:
        raise RuntimeError(f"no CONNACK from {host}:{port}: {reply!r}")
    code, props = parse_connack(reply, version)
    if code != 0:
        raise RuntimeError(f"CONNACK refused the connection, code {code:#x}")
    # [MQTT-3.2.2.3.3] absent Receive Maximum means 65535
    proto.receive_maximum = props.get(0x21, 65535)
    return proto


async def run(args) -> dict:
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000000}"
    topic = f"manifold-bench/{tag}".encode()
    progress = asyncio.Event()
    qos = args.qos
    version = getattr(args, "mqtt_version", 4)
    result = {"protocol": "mqtt", "mqtt_version": "5.0" if version == 5 else "3.1.1", "qos": qos, "messages": args.messages, "received": 0,
              "payload_bytes": args.size, "window": args.window, "seconds": None,
              "msgs_per_s": None, "complete": False}

    sub = await open_client(args.host, args.port, f"bench-sub-{tag}", progress, args.timeout,
                            version)
    sub.transport.write(subscribe_frame(1, topic, qos, version))
    reply = await asyncio.wait_for(sub.control.get(), args.timeout)
    if not reply or reply[0] >> 4 != 9 or reply[-1] >= 0x80:
        raise RuntimeError(f"SUBSCRIBE refused: {reply!r}")
    pub = await open_client(args.host, args.port, f"bench-pub-{tag}", progress, args.timeout,
                            version)

    payload = os.urandom(args.size // 2 + 1).hex()[:args.size].encode()
    if qos == 0:
        frame = publish_frame(topic, payload, 0, version=version)
        frames = None
    else:
        # One pre-encoded frame per packet identifier 1..65535 [MQTT-2.3.1-1: non-zero].
        frames = [publish_frame(topic, payload, qos, pid, version) for pid in range(1, 65536)]
    window = max(1, min(args.window, 60000))
    # QoS 1 PUBLISH not yet acknowledged: within the server's Receive Maximum (MQTT 5).
    inflight_max = max(1, min(window, pub.receive_maximum)) if version == 5 else window
    batch = max(1, args.batch)

    async def phase(count: int, deadline: float) -> tuple[int, float, float]:
        """Publish count messages and wait for them; return (received, t_first, t_last)."""
        base_recv = sub.publishes
        sent = 0
        seq = phase.seq
        t_first = time.perf_counter()
        last_progress = time.monotonic()
        last_seen = 0
        while True:
            received = sub.publishes - base_recv
            if received >= count:
                break
            if sub.closed.done() or pub.closed.done():
                raise RuntimeError("the broker closed a connection")
            now = time.monotonic()
            if received != last_seen:
                last_seen, last_progress = received, now
            if now > deadline or now - last_progress > args.idle_timeout:
                break
            allowed = min(count - sent, window - (sent - received), batch)
            if qos:
                allowed = min(allowed, inflight_max - (phase.sent_total + sent - pub.pubacks))
            if allowed > 0 and pub.can_write.is_set():
                if qos == 0:
                    pub.transport.write(frame * allowed)
                else:
                    start = seq % 65535
                    stop = start + allowed
                    if stop <= 65535:
                        pub.transport.write(b"".join(frames[start:stop]))
                    else:
                        pub.transport.write(b"".join(frames[start:] + frames[:stop - 65535]))
                    seq += allowed
                sent += allowed
                # Let the loop read replies between batches.
                await asyncio.sleep(0)
                continue
            await wait_for_progress(progress)
        phase.seq = seq
        phase.sent_total += sent
        return sub.publishes - base_recv, t_first, time.perf_counter()

    phase.seq = 0
    phase.sent_total = 0
    received = await warm_then_measure(phase, args, result)
    if not result["complete"]:
        result["error"] = (f"only {received} of {args.messages} messages arrived "
                           f"(idle {args.idle_timeout} s or total {args.timeout} s limit)")
    for proto in (pub, sub):
        if not proto.closed.done():
            proto.transport.write(DISCONNECT)
            proto.transport.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--qos", type=int, choices=(0, 1), default=0)
    p.add_argument("--mqtt-version", type=int, choices=(4, 5), default=4,
                   help="protocol level: 4 = MQTT 3.1.1 (default), 5 = MQTT 5.0")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    p.add_argument("--window", type=int, default=1000,
                   help="most messages published and not yet consumed (default 1000)")
    p.add_argument("--batch", type=int, default=100, help="frames per write (default 100)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed messages first")
    p.add_argument("--timeout", type=float, default=120.0, help="whole run limit, s")
    p.add_argument("--idle-timeout", type=float, default=10.0,
                   help="give up when nothing arrives for this long, s")
    args = p.parse_args(argv)
    install_uvloop()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout + 15))
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        result = {"protocol": "mqtt", "qos": args.qos, "messages": args.messages,
                  "msgs_per_s": None, "complete": False,
                  "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
