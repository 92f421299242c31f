"""The session engine: what every protocol session needs the same way, kept once here so that
an adapter's session only translates frames into these calls and these events into frames.

- ``output.Output``: output batched per loop tick, one transport write per batch
  (``output.FlushGroup``: batches made during one read of any connection go out at its end);
- ``confirms.PublisherConfirms``: publisher confirms released in sequence order, folded into
  cumulative (AMQP ``multiple``) acks;
- ``in_order.InOrderReplies``: replies released in request order, each after its own write
  (MQTT PUBACK/PUBREC/PUBCOMP/SUBACK, STOMP RECEIPT, AMQP Tx.Commit-Ok);
- ``unacked.Unacked`` / ``unacked.Ledger``: deliveries the client holds, by tag; single,
  cumulative and ``multiple`` acks, consumer timeouts, requeue on teardown;
- ``credit.Window``: a prefetch window shared by several consumers (AMQP global prefetch,
  MQTT Receive Maximum) and when its consumers must be resumed.

Nothing here knows a socket or a protocol: the transport is anything with ``write`` (and
``writelines``), the queue side is ``broker.consumer``. The WebSocket transport and the AWS API
sessions can use the same pieces.
"""
