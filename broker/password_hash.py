"""RabbitMQ's password hashes, so users exported from RabbitMQ log in with their old password.

RabbitMQ stores ``base64(salt ++ H(salt ++ utf8(password)))`` with a 4-byte random salt, where H
is SHA-256 (``rabbit_password_hashing_sha256``, the default since 3.6), SHA-512 or MD5 (the
pre-3.6 default). See rabbit_password.erl (``hash/2``, ``salted_hash/3``) in rabbitmq-server.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

ALGORITHMS = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
DEFAULT_ALGORITHM = "rabbit_password_hashing_sha256"
SALT_BYTES = 4


def hash_password(password: str, algorithm: str = DEFAULT_ALGORITHM,
                  salt: bytes | None = None) -> str:
    digest = ALGORITHMS[algorithm]
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return base64.b64encode(salt + digest(salt + password.encode()).digest()).decode()


def check_hash(password_hash: str, algorithm: str) -> None:
    """ValueError naming the problem unless ``password_hash`` can be verified."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown hashing_algorithm '{algorithm}'; accepted: "
                         f"{', '.join(ALGORITHMS)}")
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("password_hash is not base64") from None
    if len(raw) != SALT_BYTES + ALGORITHMS[algorithm]().digest_size:
        raise ValueError(f"password_hash has {len(raw)} bytes, not a salted {algorithm} digest")


def verify(password_hash: str, algorithm: str, password: str) -> bool:
    """True if ``password`` matches; an empty hash (RabbitMQ: no password login) never does."""
    try:
        check_hash(password_hash, algorithm)
    except ValueError:
        return False
    raw = base64.b64decode(password_hash)
    salt, expected = raw[:SALT_BYTES], raw[SALT_BYTES:]
    return hmac.compare_digest(ALGORITHMS[algorithm](salt + password.encode()).digest(), expected)
