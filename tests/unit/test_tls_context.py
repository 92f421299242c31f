"""broker/tls.py: the server context follows [tls], and bad files are configuration errors."""
import ssl

import pytest

from manifold.broker.tls import peer_common_name, server_context
from manifold.config.settings import ConfigError, TlsSettings
from tests.pki import make_pki


def test_context_follows_settings(tmp_path):
    pki = make_pki(tmp_path)
    cert, key = pki.issue("localhost", server=True)
    base = dict(cert_file=str(cert), key_file=str(key))
    context = server_context(TlsSettings(**base))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # no CA: no client certificate asked for
    assert context.options & ssl.OP_NO_RENEGOTIATION
    context = server_context(TlsSettings(**base, min_version="1.3", ca_file=str(pki.ca_cert),
                                         verify="required"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert server_context(TlsSettings(**base, ca_file=str(pki.ca_cert))).verify_mode == \
        ssl.CERT_OPTIONAL


def test_bad_files_are_config_errors(tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"\[tls\] cannot load"):
        server_context(TlsSettings(cert_file=missing, key_file=missing))


def test_peer_common_name():
    cert = {"subject": ((("countryName", "NL"),), (("commonName", "device1"),))}
    assert peer_common_name(cert) == "device1"
    assert peer_common_name(None) is None and peer_common_name({}) is None
