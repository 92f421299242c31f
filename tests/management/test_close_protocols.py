"""DELETE /api/connections/{name} closes MQTT and STOMP clients in their protocol's words."""
from __future__ import annotations

import queue
import urllib.parse

import paho.mqtt.client as mqtt
import stomp
from paho.mqtt.enums import CallbackAPIVersion

from .helpers import TIMEOUT_S, base_url, session, wait_for


def close_only_connection(broker, protocol: str, reason: str) -> None:
    s, base = session(), base_url(broker)
    rows = wait_for(lambda: [r for r in s.get(base + "/api/connections", timeout=TIMEOUT_S).json()
                             if r["protocol"] == protocol and r["user"] == "guest"],
                    what=f"the {protocol} connection")
    resp = s.delete(base + "/api/connections/" + urllib.parse.quote(rows[0]["name"], safe=""),
                    headers={"X-Reason": reason}, timeout=TIMEOUT_S)
    assert resp.status_code == 204


def test_mqtt5_client_gets_disconnect_administrative_action(running_broker):
    disconnects: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="ops-test",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set("guest", "guest")
    client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
    client.on_disconnect = lambda c, u, flags, rc, props: disconnects.put((rc, props))
    client.connect("127.0.0.1", running_broker.ports["mqtt"])
    client.loop_start()
    try:
        assert not connected.get(timeout=TIMEOUT_S).is_failure
        close_only_connection(running_broker, "mqtt", "rebalancing")
        reason, props = disconnects.get(timeout=TIMEOUT_S)
        assert reason.value == 0x98  # Administrative action
        assert props.ReasonString == "rebalancing"
    finally:
        client.loop_stop()


def test_stomp_client_gets_error_frame_with_reason(running_broker):
    errors: queue.Queue = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_error(self, frame):
            errors.put(frame)

    conn = stomp.Connection12([("127.0.0.1", running_broker.ports["stomp"])])
    conn.set_listener("test", Listener())
    conn.connect("guest", "guest", wait=True)
    try:
        close_only_connection(running_broker, "stomp", "maintenance")
        frame = errors.get(timeout=TIMEOUT_S)
        assert frame.headers["message"] == "maintenance"
    finally:
        try:
            conn.disconnect()
        except Exception:  # the broker already closed it
            pass
