"""Key material for a test: X25519 key pairs and preshared keys, base64 like `wg genkey`."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: str
    public: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def keypair() -> KeyPair:
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    private = X25519PrivateKey.from_private_bytes(bytes(raw))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(_b64(bytes(raw)), _b64(public))


def psk() -> str:
    return _b64(os.urandom(32))
