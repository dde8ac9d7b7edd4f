"""Cryptographic primitives of WireGuard (WP 5.4), built on `cryptography` and `hashlib`.

No cipher is written here: ChaCha20-Poly1305, ChaCha20 and X25519 come from `cryptography`,
BLAKE2s and HMAC from the standard library. XChaCha20-Poly1305 is assembled from them as in
draft-irtf-cfrg-xchacha section 2.3 (HChaCha20 subkey + ChaCha20-Poly1305).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .constants import CONSTRUCTION, HASH_LEN, IDENTIFIER, KEY_LEN, MAC_LEN
from .errors import ConfigError, ProtocolError

__all__ = [
    "AeadError",
    "InvalidTag",
    "aead_decrypt",
    "aead_encrypt",
    "clamp",
    "dh",
    "generate_private_key",
    "generate_psk",
    "hash_",
    "hmac_",
    "kdf1",
    "kdf2",
    "kdf3",
    "key_from_base64",
    "key_to_base64",
    "mac",
    "public_key",
    "xaead_decrypt",
    "xaead_encrypt",
]

AeadError = InvalidTag


def hash_(*parts: bytes) -> bytes:
    """HASH(input): BLAKE2s-256 of the concatenation (WP 5.4)."""
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte output (WP 5.4)."""
    return hashlib.blake2s(data, digest_size=MAC_LEN, key=key).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC(key, input): HMAC-BLAKE2s-256 (WP 5.4)."""
    return hmac.digest(key, data, "blake2s")


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1: the first output of HKDF with HMAC-BLAKE2s (WP 5.4)."""
    t0 = hmac_(key, data)
    return hmac_(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2: tau1 = HMAC(tau0, 0x1), tau2 = HMAC(tau0, tau1 || 0x2) (WP 5.4)."""
    t0 = hmac_(key, data)
    t1 = hmac_(t0, b"\x01")
    t2 = hmac_(t0, t1 + b"\x02")
    return t1, t2


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3: as KDF2 plus tau3 = HMAC(tau0, tau2 || 0x3) (WP 5.4)."""
    t0 = hmac_(key, data)
    t1 = hmac_(t0, b"\x01")
    t2 = hmac_(t0, t1 + b"\x02")
    t3 = hmac_(t0, t2 + b"\x03")
    return t1, t2, t3


def aead_nonce(counter: int) -> bytes:
    """The AEAD nonce: 32 zero bits then the 64-bit little-endian counter (WP 5.4)."""
    return struct.pack("<4xQ", counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, auth: bytes) -> bytes:
    """AEAD(key, counter, plain, auth): ChaCha20-Poly1305 per RFC 7539 (WP 5.4)."""
    return ChaCha20Poly1305(key).encrypt(aead_nonce(counter), plaintext, auth)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, auth: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; raises :class:`InvalidTag` if authentication fails."""
    return ChaCha20Poly1305(key).decrypt(aead_nonce(counter), ciphertext, auth)


_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha 2.2) taken from one ChaCha20 keystream block.

    A ChaCha20 block is ``rounds(state) + state``; with counter||nonce set to the 16-byte
    HChaCha20 input, subtracting the known initial words recovers ``rounds(state)``, whose
    words 0-3 and 12-15 are the HChaCha20 output. The rounds themselves run in `cryptography`.
    """
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(bytes(64))
    words = struct.unpack("<16I", block)
    initial = _SIGMA + struct.unpack("<8I", key) + struct.unpack("<4I", nonce16)
    out = [(words[i] - initial[i]) & 0xFFFFFFFF for i in (0, 1, 2, 3, 12, 13, 14, 15)]
    return struct.pack("<8I", *out)


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, auth: bytes) -> bytes:
    """XAEAD: XChaCha20-Poly1305 with a 24-byte nonce (WP 5.4, used for cookie replies)."""
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\x00" * 4 + nonce24[16:], plaintext, auth)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, auth: bytes) -> bytes:
    """Inverse of :func:`xaead_encrypt`; raises :class:`InvalidTag` if authentication fails."""
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).decrypt(b"\x00" * 4 + nonce24[16:], ciphertext, auth)


def clamp(private_key: bytes) -> bytes:
    """RFC 7748 section 5 clamping of a Curve25519 scalar (as `wg genkey` prints it)."""
    if len(private_key) != KEY_LEN:
        raise ConfigError(f"a private key is {KEY_LEN} bytes, got {len(private_key)}")
    b = bytearray(private_key)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key() -> bytes:
    """DH-GENERATE: a fresh clamped Curve25519 private key."""
    return clamp(os.urandom(KEY_LEN))


def generate_psk() -> bytes:
    """A fresh 32-byte preshared key."""
    return os.urandom(KEY_LEN)


def public_key(private_key: bytes) -> bytes:
    """DH-PUBKEY (WP 5.4): X25519 of the (clamped) scalar and the base point."""
    priv = X25519PrivateKey.from_private_bytes(private_key)
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private_key: bytes, peer_public: bytes) -> bytes:
    """DH(private, public): X25519 (RFC 7748); the scalar is clamped by the X25519 function.

    An all-zero result (a low-order peer key) is rejected as the kernel does (noise.c
    `curve25519` returning false): raises :class:`ProtocolError` ``low-order-key``.
    """
    try:
        return X25519PrivateKey.from_private_bytes(private_key).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:
        raise ProtocolError("low-order-key", "DH result is all zero") from exc


def key_to_base64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def key_from_base64(text: str, what: str = "key") -> bytes:
    """Decode a base64 key as `wg` prints it: exactly 44 characters, 32 bytes."""
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{what} is not valid base64: {text!r}") from exc
    if len(text) != 44 or len(raw) != KEY_LEN:
        raise ConfigError(f"{what} must be {KEY_LEN} bytes in base64 (44 characters): {text!r}")
    return raw


# Derived once: the hash of the construction and identifier (WP 5.4.2).
INITIAL_CHAINING_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAINING_KEY, IDENTIFIER)
assert len(INITIAL_HASH) == HASH_LEN
