"""RabbitMQ password hashes: the worked example from RabbitMQ's documentation ("Computing the
hash": salt 908DC60A, password test12), plus the sha512 and md5 variants."""
import base64
import hashlib

import pytest

from manifold.broker import password_hash

RABBITMQ_DOC_EXAMPLE = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_hash_matches_rabbitmq_documentation_example():
    assert password_hash.hash_password("test12", salt=bytes.fromhex("908DC60A")) == \
        RABBITMQ_DOC_EXAMPLE


def test_verify_documentation_example():
    algorithm = "rabbit_password_hashing_sha256"
    assert password_hash.verify(RABBITMQ_DOC_EXAMPLE, algorithm, "test12")
    assert not password_hash.verify(RABBITMQ_DOC_EXAMPLE, algorithm, "test13")
    assert not password_hash.verify(RABBITMQ_DOC_EXAMPLE, "rabbit_password_hashing_sha512",
                                    "test12")


@pytest.mark.parametrize("algorithm,digest", [("rabbit_password_hashing_sha512", hashlib.sha512),
                                              ("rabbit_password_hashing_md5", hashlib.md5)])
def test_other_algorithms(algorithm, digest):
    salt = b"\x01\x02\x03\x04"
    stored = base64.b64encode(salt + digest(salt + "pässword".encode()).digest()).decode()
    assert password_hash.verify(stored, algorithm, "pässword")
    assert not password_hash.verify(stored, algorithm, "password")


@pytest.mark.parametrize("stored,algorithm,problem", [
    ("", "rabbit_password_hashing_sha256", "bytes"),
    ("!!!", "rabbit_password_hashing_sha256", "base64"),
    (RABBITMQ_DOC_EXAMPLE, "bcrypt", "unknown hashing_algorithm")])
def test_unusable_hashes_are_named(stored, algorithm, problem):
    with pytest.raises(ValueError, match=problem):
        password_hash.check_hash(stored, algorithm)
    assert not password_hash.verify(stored, algorithm, "")
