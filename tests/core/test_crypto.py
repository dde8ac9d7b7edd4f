"""Known-answer tests for wgref.crypto (WP 5.4 primitives).

Vectors: wireguard-go device/kdf_test.go (HKDF with HMAC-BLAKE2s), RFC 7539 section 2.8.2
(ChaCha20-Poly1305), RFC 7748 sections 5.2 and 6.1 (X25519), draft-irtf-cfrg-xchacha-03
sections 2.2.1 (HChaCha20) and A.3.1 (XChaCha20-Poly1305).
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from wgref import crypto
from wgref.constants import CONSTRUCTION, IDENTIFIER
from wgref.crypto import (
    AeadError,
    ChaCha20Poly1305,
    aead_decrypt,
    aead_encrypt,
    aead_nonce,
    clamp,
    dh,
    hchacha20,
    kdf1,
    kdf2,
    kdf3,
    public_key,
    xaead_decrypt,
    xaead_encrypt,
)
from wgref.errors import ConfigError, ProtocolError

H = bytes.fromhex

# --------------------------------------------------------------------------- HKDF-BLAKE2s

# wireguard-go device/kdf_test.go: (key, input, t0, t1, t2); t0..t2 are KDF3's three outputs.
KDF_VECTORS = [
    (
        "746573742d6b6579",
        "746573742d696e707574",
        "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
        "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
        "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    ),
    (
        "776972656775617264",
        "776972656775617264",
        "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
        "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
        "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    ),
    (
        "",
        "",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
]


@pytest.mark.parametrize(("key", "data", "t0", "t1", "t2"), KDF_VECTORS)
def test_kdf_vectors(key: str, data: str, t0: str, t1: str, t2: str) -> None:
    assert kdf3(H(key), H(data)) == (H(t0), H(t1), H(t2))
    assert kdf2(H(key), H(data)) == (H(t0), H(t1))
    assert kdf1(H(key), H(data)) == H(t0)


def _reference_hmac_blake2s(key: bytes, data: bytes) -> bytes:
    """RFC 2104 HMAC written out with BLAKE2s (block size 64), independent of hmac.digest."""
    if len(key) > 64:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.blake2s(bytes(b ^ 0x36 for b in key) + data).digest()
    return hashlib.blake2s(bytes(b ^ 0x5C for b in key) + inner).digest()


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 65, 100])
def test_hmac_matches_rfc2104_construction(key_len: int) -> None:
    key = bytes(range(key_len))
    assert crypto.hmac_(key, b"wgref") == _reference_hmac_blake2s(key, b"wgref")


def test_hash_and_mac() -> None:
    assert crypto.hash_(b"ab", b"c") == hashlib.blake2s(b"abc").digest()
    tag = crypto.mac(bytes(32), b"x")
    assert len(tag) == 16
    assert tag == hashlib.blake2s(b"x", digest_size=16, key=bytes(32)).digest()


def test_initial_chaining_key_and_hash() -> None:
    # WP 5.4.2: C_i = HASH(CONSTRUCTION), H_i = HASH(C_i || IDENTIFIER).
    assert hashlib.blake2s(CONSTRUCTION).digest() == crypto.INITIAL_CHAINING_KEY
    assert hashlib.blake2s(crypto.INITIAL_CHAINING_KEY + IDENTIFIER).digest() == crypto.INITIAL_HASH


# --------------------------------------------------------------------------- AEAD

RFC7539_KEY = bytes(range(0x80, 0xA0))
RFC7539_AAD = H("50515253c0c1c2c3c4c5c6c7")
SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
    b"the future, sunscreen would be it."
)
RFC7539_NONCE = H("070000004041424344454647")
RFC7539_CIPHERTEXT = H(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC7539_TAG = H("1ae10b594f09e26a7e902ecbd0600691")


def test_rfc7539_aead_vector() -> None:
    # RFC 7539 2.8.2; its nonce (07000000 || IV) is not of WireGuard's form, so the cipher
    # wgref.crypto uses is driven directly.
    aead = ChaCha20Poly1305(RFC7539_KEY)
    sealed = aead.encrypt(RFC7539_NONCE, SUNSCREEN, RFC7539_AAD)
    assert sealed == RFC7539_CIPHERTEXT + RFC7539_TAG
    assert aead.decrypt(RFC7539_NONCE, sealed, RFC7539_AAD) == SUNSCREEN


def test_aead_nonce_layout() -> None:
    # WP 5.4: 32 zero bits then the 64-bit little-endian counter.
    assert aead_nonce(0) == bytes(12)
    assert aead_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert aead_nonce(0x0807060504030201) == H("000000000102030405060708")
    assert aead_nonce((1 << 64) - 1) == bytes(4) + b"\xff" * 8
    with pytest.raises(struct.error):
        aead_nonce(1 << 64)


@pytest.mark.parametrize("counter", [0, 1, 7, 0x4746454443424140, (1 << 64) - 1])
def test_aead_encrypt_is_chacha20poly1305_with_wireguard_nonce(counter: int) -> None:
    sealed = aead_encrypt(RFC7539_KEY, counter, SUNSCREEN, RFC7539_AAD)
    expected = ChaCha20Poly1305(RFC7539_KEY).encrypt(
        bytes(4) + struct.pack("<Q", counter), SUNSCREEN, RFC7539_AAD
    )
    assert sealed == expected
    assert len(sealed) == len(SUNSCREEN) + 16
    assert aead_decrypt(RFC7539_KEY, counter, sealed, RFC7539_AAD) == SUNSCREEN


def test_aead_rejects_tampering() -> None:
    sealed = aead_encrypt(RFC7539_KEY, 5, b"hello", b"auth")
    with pytest.raises(AeadError):
        aead_decrypt(RFC7539_KEY, 6, sealed, b"auth")  # wrong counter
    with pytest.raises(AeadError):
        aead_decrypt(RFC7539_KEY, 5, sealed, b"autH")  # wrong associated data
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(AeadError):
        aead_decrypt(RFC7539_KEY, 5, flipped, b"auth")
    # WP 5.4: an empty plaintext still gets a 16-byte tag (the responder's "nothing").
    assert len(aead_encrypt(RFC7539_KEY, 0, b"", b"")) == 16


# --------------------------------------------------------------------------- XChaCha20-Poly1305


def test_hchacha20_vector() -> None:
    # draft-irtf-cfrg-xchacha-03 section 2.2.1.
    key = bytes(range(32))
    nonce = H("000000090000004a0000000031415927")
    expected = H("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    assert hchacha20(key, nonce) == expected


XCHACHA_NONCE = bytes(range(0x40, 0x58))
XCHACHA_CIPHERTEXT = H(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XCHACHA_TAG = H("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_vector() -> None:
    # draft-irtf-cfrg-xchacha-03 appendix A.3.1.
    sealed = xaead_encrypt(RFC7539_KEY, XCHACHA_NONCE, SUNSCREEN, RFC7539_AAD)
    assert sealed == XCHACHA_CIPHERTEXT + XCHACHA_TAG
    assert xaead_decrypt(RFC7539_KEY, XCHACHA_NONCE, sealed, RFC7539_AAD) == SUNSCREEN


def test_xaead_rejects_tampering() -> None:
    sealed = xaead_encrypt(RFC7539_KEY, XCHACHA_NONCE, SUNSCREEN, RFC7539_AAD)
    other_nonce = XCHACHA_NONCE[:-1] + b"\x00"
    with pytest.raises(AeadError):
        xaead_decrypt(RFC7539_KEY, other_nonce, sealed, RFC7539_AAD)
    # The first 16 nonce bytes go into HChaCha20: changing one there must fail too.
    with pytest.raises(AeadError):
        xaead_decrypt(RFC7539_KEY, b"\x00" + XCHACHA_NONCE[1:], sealed, RFC7539_AAD)
    with pytest.raises(AeadError):
        xaead_decrypt(RFC7539_KEY, XCHACHA_NONCE, sealed, RFC7539_AAD + b"\x00")


# --------------------------------------------------------------------------- X25519

# RFC 7748 section 5.2: (scalar, u-coordinate, output).
X25519_VECTORS = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]


@pytest.mark.parametrize(("scalar", "u", "out"), X25519_VECTORS)
def test_x25519_rfc7748_vectors(scalar: str, u: str, out: str) -> None:
    # The scalars are not clamped: dh must clamp them (RFC 7748 decodeScalar25519).
    assert dh(H(scalar), H(u)) == H(out)
    assert dh(clamp(H(scalar)), H(u)) == H(out)


def test_x25519_iterated() -> None:
    # RFC 7748 section 5.2: k = u = 9; after 1 and 1000 iterations (not 1,000,000: too slow).
    k = u = (9).to_bytes(32, "little")
    for i in range(1000):
        k, u = dh(k, u), k
        if i == 0:
            assert k == H("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    assert k == H("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")


ALICE_PRIVATE = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748_diffie_hellman() -> None:
    # RFC 7748 section 6.1.
    assert public_key(ALICE_PRIVATE) == ALICE_PUBLIC
    assert public_key(BOB_PRIVATE) == BOB_PUBLIC
    assert dh(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert dh(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


def test_clamp() -> None:
    assert clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert clamp(bytes(32)) == bytes(31) + b"\x40"
    assert clamp(clamp(ALICE_PRIVATE)) == clamp(ALICE_PRIVATE)
    with pytest.raises(ConfigError):
        clamp(bytes(31))


@pytest.mark.parametrize("low_bits", [0, 1, 7])
@pytest.mark.parametrize("high_bits", [0x00, 0x40, 0x80, 0xC0])
def test_clamped_bits_do_not_matter(low_bits: int, high_bits: int) -> None:
    # A key that differs only in the bits clamping forces gives the same public key and DH.
    other = bytearray(ALICE_PRIVATE)
    other[0] = (other[0] & 0xF8) | low_bits
    other[31] = (other[31] & 0x3F) | high_bits
    assert clamp(bytes(other)) == clamp(ALICE_PRIVATE)
    assert public_key(bytes(other)) == ALICE_PUBLIC
    assert dh(bytes(other), BOB_PUBLIC) == SHARED


def test_generated_keys_are_clamped() -> None:
    for _ in range(8):
        key = crypto.generate_private_key()
        assert clamp(key) == key
        assert len(crypto.generate_psk()) == 32


P = 2**255 - 19

# Points of small order on Curve25519, and the non-canonical encodings (>= p, below 2^255)
# of 0, 1: DH with any of them and any clamped scalar is all zero. (Encodings with bit 255 set
# are not listed: X25519 masks that bit, so they name different, ordinary points.)
LOW_ORDER_POINTS = [
    bytes(32),  # 0 (order 4)
    (1).to_bytes(32, "little"),  # 1 (order 1)
    H("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
    H("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),  # order 8
    (P - 1).to_bytes(32, "little"),  # -1 (order 2)
    P.to_bytes(32, "little"),  # p = 0
    (P + 1).to_bytes(32, "little"),  # p + 1 = 1
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_dh_with_low_order_point_raises(point: bytes) -> None:
    for private in (ALICE_PRIVATE, BOB_PRIVATE, crypto.generate_private_key()):
        with pytest.raises(ProtocolError) as info:
            dh(private, point)
        assert info.value.reason == "low-order-key"


def test_key_base64_round_trip() -> None:
    text = crypto.key_to_base64(ALICE_PUBLIC)
    assert len(text) == 44
    assert crypto.key_from_base64(text) == ALICE_PUBLIC
    assert crypto.key_from_base64(f"  {text}\n") == ALICE_PUBLIC
    for bad in (text[:-1], text[:-2] + "!=", "A" * 44, crypto.key_to_base64(bytes(31))):
        with pytest.raises(ConfigError):
            crypto.key_from_base64(bad)
