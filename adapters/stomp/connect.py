"""CONNECT / STOMP (version negotiation, login, virtual host, heart-beats) and DISCONNECT
[STOMP 1.2 "Connecting", "Heart-beating", "DISCONNECT"].

``ConnectMethods`` is one part of ``StompSession`` (session.py).
"""
from __future__ import annotations

from manifold.broker.errors import BrokerError

from .codec import Frame
from .errors import CLOSED, CONNECTED, CONNECTING, SUPPORTED_VERSIONS, StompError


class ConnectMethods:
    """CONNECT, heart-beats and DISCONNECT."""

    # ================================================================ CONNECT
    def on_connect(self, frame: Frame) -> None:
        if self.state != CONNECTING:
            raise StompError("Unexpected CONNECT", "Already connected")
        headers = frame.headers
        # [STOMP 1.2 "Protocol Negotiation"]: no accept-version means 1.0.
        accepted = [v.strip() for v in headers.get("accept-version", "1.0").split(",")]
        common = [v for v in SUPPORTED_VERSIONS if v in accepted]
        if not common:
            raise StompError("Version mismatch",
                             "Supported versions are " + ",".join(SUPPORTED_VERSIONS),
                             {"version": ",".join(SUPPORTED_VERSIONS)})
        version = common[-1]
        # RabbitMQ's default_user: a CONNECT without login logs in as guest/guest.
        login = headers.get("login")
        passcode = headers.get("passcode")
        conn = self.conn
        # A verified client certificate's CN may stand in for login/passcode ([tls]
        # identity_as_username); broker/access.py decides.
        identity = conn.tls_identity if conn is not None else None
        if login is None and identity is None:
            login, passcode = "guest", "guest" if passcode is None else passcode
        peer = conn.peer_host if conn is not None else None
        try:
            user = self.broker.authenticate(login, passcode or "", peer, identity)
        except BrokerError as exc:
            if conn is not None:  # the failed-login back-off holds the ERROR back
                conn.hold_output(getattr(exc, "delay_s", 0.0))
            raise StompError("Bad CONNECT", exc.text) from None
        vhost_name = self._vhost_name(headers.get("host"))
        vhost = self.broker.open_vhost(vhost_name, user, conn)
        self.grant = self.broker.grant(user, vhost_name)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.version = version
        self.codec.version = version
        self.user = user
        self.vhost = vhost
        self.state = CONNECTED
        if self.conn is not None:
            self.conn.opened(user.name, vhost.name)
        out = {"server": self.server.server_header, "session": f"session-{self.session_id}"}
        if version != "1.0" or "accept-version" in headers:
            out["version"] = version
        send_ms = receive_ms = 0
        if version != "1.0":
            client_send, client_receive = self._heart_beat(headers.get("heart-beat", "0,0"))
            offer = self.settings.heartbeat_ms
            # [STOMP 1.2 "Heart-beating"]: each side uses the larger of what one can do and the
            # other wants; 0 on either side switches that direction off.
            if client_send and offer:
                receive_ms = max(client_send, offer)
            if client_receive and offer:
                send_ms = max(client_receive, offer)
            out["heart-beat"] = f"{offer},{offer}"
        self.write_frame(Frame("CONNECTED", out))
        if self.conn is not None:
            # Drop a client silent for ~2 of its intervals; send ours early (at half the agreed
            # interval) so that a client checking at 1x-1.5x never sees a late one.
            self.conn.set_keepalive(receive_ms * 2 / 1000 if receive_ms else None,
                                    self._heartbeat_timeout if receive_ms else None,
                                    send_ms / 2000 if send_ms else None,
                                    self._send_heartbeat if send_ms else None)

    def _vhost_name(self, host: str | None) -> str:
        """``host`` names the virtual host (RabbitMQ). Many clients (stomp.py among them) put
        the DNS name of the server there, so a name that is no virtual host means the default."""
        if host and host in self.broker.vhosts:
            return host
        return "/"

    @staticmethod
    def _heart_beat(value: str) -> tuple[int, int]:
        try:
            cx, cy = (int(part) for part in value.split(","))
        except ValueError:
            raise StompError("Bad heart-beat", f"invalid heart-beat header {value!r}") from None
        if cx < 0 or cy < 0:
            raise StompError("Bad heart-beat", f"invalid heart-beat header {value!r}")
        return cx, cy

    def _heartbeat_timeout(self) -> None:
        if self.conn is not None:
            self.state = CLOSED
            self.conn.abort("heart-beat timeout: nothing received from the client")

    def _send_heartbeat(self) -> None:
        if self.conn is not None:
            self._write(b"\n")

    # ================================================================ DISCONNECT
    def on_disconnect(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        self.state = CLOSED
        if receipt is not None:
            self._receipt(receipt, close=True)  # [STOMP 1.2 "DISCONNECT"]: receipt, then close
        else:
            self._close("client sent DISCONNECT")
