"""TLS for the shared transport: the server context from ``[tls]`` and a sans-I/O layer.

The layer runs OpenSSL over memory BIOs (``ssl.SSLContext.wrap_bio``), as asyncio's own
``sslproto`` does, so that the transport (broker/transport.py) keeps one code path for TCP, TLS
and WebSocket, sees failed handshakes (one log line each: a plaintext client on a TLS port, an
untrusted client certificate) and can time them out. Reloading the certificate on SIGHUP builds a
new context for new connections; open ones keep theirs and are not dropped.
"""
from __future__ import annotations

import ssl
from typing import Callable

from manifold.config.settings import ConfigError, TlsSettings

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """Python's secure defaults (no SSLv3/TLS 1.0/1.1, no compression, modern ciphers) plus
    ``min_version``, no renegotiation, and client-certificate checks with ``ca_file``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file or None)
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cannot load certificate, key or CA: {exc}") from None
    # Without a CA nothing could verify a client certificate, so none is asked for.
    context.verify_mode = _VERIFY[tls.verify] if tls.ca_file else ssl.CERT_NONE
    return context


def peer_common_name(cert: dict | None) -> str | None:
    """The subject CN of a verified peer certificate (``SSLObject.getpeercert()``)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class TlsLayer:
    """Bytes from the socket in, plaintext out; plaintext in, bytes for the socket out."""

    def __init__(self, context: ssl.SSLContext, send_raw: Callable[[bytes], None]):
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._send_raw = send_raw
        self.handshake_done = False
        #: CN of the verified client certificate, once the handshake is done
        self.identity: str | None = None

    def receive(self, data: bytes) -> bytes:
        """Plaintext decoded from ``data`` (b"" if none yet). Raises ssl.SSLError on a failed
        handshake or a broken record: the caller logs it and drops the connection."""
        self._incoming.write(data)
        if not self.handshake_done:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return b""
            finally:
                self._flush()
            self.handshake_done = True
            self.identity = peer_common_name(self._ssl.getpeercert())
        chunks = []
        while True:
            try:
                chunk = self._ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the client is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        self._flush()  # TLS 1.3 key updates and the like
        return b"".join(chunks)

    def wrap(self, data: bytes) -> bytes:
        """Encrypt plaintext; the records to write to the socket."""
        if data:
            self._ssl.write(data)
        return self._outgoing.read()

    @property
    def version(self) -> str | None:
        return self._ssl.version()

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._send_raw(pending)
