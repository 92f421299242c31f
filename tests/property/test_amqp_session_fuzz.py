"""Hypothesis drives an AMQP session with random (well-framed) method sequences: whatever the
client does, the broker answers with protocol errors, never an internal error (541)."""
from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import header as pheader

from manifold.adapters.amqp import make_server
from manifold.broker.core import Broker
from manifold.config.settings import Settings

from tests.unit.test_amqp_session import Client

names = st.sampled_from(["q1", "q2", "", "amq.x", "ex", "amq.direct", "amq.topic"])
keys = st.sampled_from(["", "k", "a.b", "#"])
small = st.integers(min_value=0, max_value=5)
channels = st.integers(min_value=1, max_value=3)
args = st.sampled_from([{}, {"x-max-length": 1}, {"x-message-ttl": 0},
                        {"x-queue-type": "stream"}, {"x-max-length": "bad"},
                        {"x-overflow": "reject-publish", "x-max-length": 1},
                        {"x-dead-letter-exchange": "ex"}, {"x-stream-offset": "first"},
                        {"x-match": "any", "k": "v"}])

methods = st.one_of(
    st.builds(lambda: C.Channel.Close(200, "bye", 0, 0)),
    st.builds(lambda a: C.Channel.Flow(active=a), st.booleans()),
    st.builds(lambda n, t, p, d, a: C.Exchange.Declare(exchange=n, exchange_type=t, passive=p,
                                                       durable=d, arguments=a),
              names, st.sampled_from(["direct", "fanout", "topic", "headers", "bogus"]),
              st.booleans(), st.booleans(), args),
    st.builds(lambda n, u: C.Exchange.Delete(exchange=n, if_unused=u), names, st.booleans()),
    st.builds(lambda d, s, k: C.Exchange.Bind(destination=d, source=s, routing_key=k),
              names, names, keys),
    st.builds(lambda n, p, d, e, a, x: C.Queue.Declare(queue=n, passive=p, durable=d,
                                                       exclusive=e, auto_delete=a, arguments=x),
              names, st.booleans(), st.booleans(), st.booleans(), st.booleans(), args),
    st.builds(lambda q, e, k, a: C.Queue.Bind(queue=q, exchange=e, routing_key=k, arguments=a),
              names, names, keys, args),
    st.builds(lambda q, e, k: C.Queue.Unbind(queue=q, exchange=e, routing_key=k),
              names, names, keys),
    st.builds(lambda q: C.Queue.Purge(queue=q), names),
    st.builds(lambda q, u, e: C.Queue.Delete(queue=q, if_unused=u, if_empty=e),
              names, st.booleans(), st.booleans()),
    st.builds(lambda n, g: C.Basic.Qos(prefetch_count=n, global_=g), small, st.booleans()),
    st.builds(lambda q, t, n, e, a: C.Basic.Consume(queue=q, consumer_tag=t, no_ack=n,
                                                    exclusive=e, arguments=a),
              names, st.sampled_from(["", "c1", "c2"]), st.booleans(), st.booleans(), args),
    st.builds(lambda t: C.Basic.Cancel(consumer_tag=t), st.sampled_from(["c1", "c2", "zz"])),
    st.builds(lambda q, n: C.Basic.Get(queue=q, no_ack=n), names, st.booleans()),
    st.builds(lambda t, m: C.Basic.Ack(delivery_tag=t, multiple=m), small, st.booleans()),
    st.builds(lambda t, m, r: C.Basic.Nack(delivery_tag=t, multiple=m, requeue=r),
              small, st.booleans(), st.booleans()),
    st.builds(lambda t, r: C.Basic.Reject(delivery_tag=t, requeue=r), small, st.booleans()),
    st.builds(lambda r: C.Basic.Recover(requeue=r), st.booleans()),
    st.builds(lambda: C.Confirm.Select()),
    st.builds(lambda: C.Tx.Select()),
    st.builds(lambda: C.Tx.Commit()),
    st.builds(lambda: C.Tx.Rollback()),
    st.builds(lambda e, k, m: ("publish", e, k, m), names, names, st.booleans()),
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(channels, methods), max_size=25))
def test_random_method_sequences_never_cause_internal_errors(steps):
    async def run():
        broker = Broker(Settings())
        server = make_server(broker, broker.settings)
        clients = [Client(server), Client(server)]
        for c in clients:
            c.handshake()
            for n in (2, 3):
                c.send(n, C.Channel.Open())
        clients[0].send(1, C.Exchange.Declare(exchange="ex", exchange_type="topic"),
                        C.Queue.Declare(queue="q1"), C.Queue.Declare(queue="q2"),
                        C.Queue.Bind(queue="q1", exchange="amq.topic", routing_key="#"),
                        C.Queue.Bind(queue="q2", exchange="ex", routing_key="#"))
        clients[0].frames()
        for i, (channel, method) in enumerate(steps):
            c = clients[i % 2]
            if c.conn.closed:
                continue
            if isinstance(method, tuple):
                _, exchange, key, mandatory = method
                c.send(channel, C.Basic.Publish(exchange=exchange, routing_key=key,
                                                mandatory=mandatory),
                       pheader.ContentHeader(0, 2, C.Basic.Properties(headers={"k": "v"})),
                       pbody.ContentBody(b"hi"))
            else:
                c.send(channel, method)
                if isinstance(method, C.Channel.Close):
                    c.send(channel, C.Channel.Open())  # keep all three channels in play
            await asyncio.sleep(0)
            for _, frame in c.frames():
                if isinstance(frame, C.Connection.Close):
                    assert frame.reply_code != 541, frame.reply_text
                if isinstance(frame, C.Channel.Close):
                    assert frame.reply_code in (403, 404, 405, 406), frame.reply_text
                    c.send(_, C.Channel.CloseOk(), C.Channel.Open())
        for c in clients:
            c.session.connection_lost()
        assert not any(q.exclusive_owner for q in broker.vhosts["/"].queues.values())

    asyncio.run(run())
