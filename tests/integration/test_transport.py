"""The shared transport: bounded output, keep-alive, close reasons (over real loopback sockets)."""
import asyncio

from manifold.broker.transport import Connection

WAIT = 30  # seconds: generous, only a failing wait takes that long


class Flood:
    """A session that answers every byte it receives with ``chunk`` bytes of output."""

    def __init__(self, chunk=256 * 1024):
        self.chunk = b"x" * chunk
        self.conn = None
        self.lost = asyncio.Event()
        self.resumed = 0

    def connection_made(self, conn):
        self.conn = conn

    def data_received(self, data):
        for _ in data:
            self.conn.write(self.chunk)

    def connection_lost(self):
        self.lost.set()

    def going_away(self):
        self.conn.close("server shutdown")

    def resume_writing(self):
        self.resumed += 1


async def wait_connected(session):
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        if session.conn is not None:
            return session.conn
        await asyncio.sleep(0.01)
    raise AssertionError("the server never saw the connection")


async def serve(session, registry, **kw):
    loop = asyncio.get_running_loop()
    opts = {"high_water_bytes": 64 * 1024, "low_water_bytes": 16 * 1024, **kw}
    server = await loop.create_server(lambda: Connection("test", session, registry, **opts),
                                      "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class OneChunkPerRead(Flood):
    """One chunk per read, however many bytes the kernel coalesced into it: the buffer then grows
    by a known step, so the test does not depend on timing."""

    def data_received(self, data):
        self.conn.write(self.chunk)


async def test_a_client_that_never_reads_stops_being_read_and_output_stays_bounded():
    # A chunk of the high-water size: after the write that crosses high water the transport stops
    # reading, so the buffer never holds more than two chunks, well under the hard limit.
    session, registry = OneChunkPerRead(chunk=64 * 1024), set()
    server, port = await serve(session, registry)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(1000):  # bounded: at most 1000 small writes (the kernel buffers a few MB)
            writer.write(b"?")
            await asyncio.sleep(0.002)
            if session.conn is not None and session.conn._reading_paused:
                break
        conn = session.conn
        assert conn._reading_paused and not conn.writable
        assert conn.transport.get_write_buffer_size() <= conn.hard_limit_bytes
        assert not session.lost.is_set()  # paused, not dropped: nothing unbounded happened
    finally:
        writer.close()
        server.close()


async def test_output_past_the_hard_limit_drops_the_connection_as_slow_consumer():
    class Burst(Flood):
        def data_received(self, data):
            for _ in range(200):  # 50 MiB regardless of backpressure: a misbehaving producer
                self.conn.write(self.chunk)

    session, registry = Burst(), set()
    server, port = await serve(session, registry)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"!")
        await asyncio.wait_for(session.lost.wait(), WAIT)
        assert "slow consumer" in session.conn.close_reason
        assert not registry
    finally:
        writer.close()
        server.close()


async def test_read_timeout_closes_a_silent_client_with_a_reason():
    session, registry = Flood(), set()
    server, port = await serve(session, registry)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await wait_connected(session)
        session.conn.set_keepalive(read_timeout_s=0.2)
        data = await asyncio.wait_for(reader.read(), WAIT)  # EOF: the server closed it
        assert data == b""
        await asyncio.wait_for(session.lost.wait(), WAIT)
        assert "keep-alive timeout" in session.conn.close_reason
    finally:
        writer.close()
        server.close()


async def test_heartbeat_sent_when_idle():
    session, registry = Flood(), set()
    server, port = await serve(session, registry)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await wait_connected(session)
        session.conn.set_keepalive(send_interval_s=0.1,
                                   send_heartbeat=lambda: session.conn.write(b"\n"))
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\n\n"
    finally:
        writer.close()
        server.close()


async def test_client_close_is_recorded():
    session, registry = Flood(), set()
    server, port = await serve(session, registry)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await asyncio.wait_for(session.lost.wait(), WAIT)
    assert session.conn.close_reason == "client closed the connection"
    server.close()
