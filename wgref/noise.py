"""The Noise_IKpsk2 handshake computations of WireGuard (WP 5.4.2-5.4.5).

These are pure functions over a :class:`SymmetricState` (the chaining key C and the hash H).
Each Diffie-Hellman result is passed in by the caller, so the same code serves a live peer
(which owns the private keys it needs) and capture replay (which may hold only one side's
keys: the initiator's, the responder's, or just the responder's static key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .crypto import (
    INITIAL_CHAINING_KEY,
    INITIAL_HASH,
    InvalidTag,
    aead_decrypt,
    aead_encrypt,
    dh,
    hash_,
    kdf1,
    kdf2,
    kdf3,
    public_key,
)
from .errors import ProtocolError
from .messages import Initiation, Response

ZERO_PSK = bytes(32)  # WP 5.4: Q is 32 zero bytes when no preshared key is configured


class SymmetricState:
    """Noise's chaining key and handshake hash, with the steps WireGuard uses."""

    __slots__ = ("chaining_key", "hash")

    def __init__(self, responder_static: bytes) -> None:
        # WP 5.4.2: C = HASH(CONSTRUCTION), H = HASH(HASH(C || IDENTIFIER) || S_r^pub)
        self.chaining_key = INITIAL_CHAINING_KEY
        self.hash = hash_(INITIAL_HASH, responder_static)

    def mix_hash(self, data: bytes) -> None:
        self.hash = hash_(self.hash, data)

    def mix_ephemeral(self, ephemeral_public: bytes) -> None:
        # WP 5.4.2/5.4.3: C = KDF1(C, E^pub); H = HASH(H || E^pub)
        self.chaining_key = kdf1(self.chaining_key, ephemeral_public)
        self.mix_hash(ephemeral_public)

    def mix_key(self, dh_result: bytes) -> bytes:
        # WP 5.4.2: (C, k) = KDF2(C, DH(...))
        self.chaining_key, key = kdf2(self.chaining_key, dh_result)
        return key

    def mix_dh(self, dh_result: bytes) -> None:
        # WP 5.4.3: C = KDF1(C, DH(...))
        self.chaining_key = kdf1(self.chaining_key, dh_result)

    def mix_psk(self, psk: bytes) -> bytes:
        # WP 5.4.3: (C, tau, k) = KDF3(C, Q); H = HASH(H || tau)
        self.chaining_key, tau, key = kdf3(self.chaining_key, psk)
        self.mix_hash(tau)
        return key

    def seal(self, key: bytes, plaintext: bytes) -> bytes:
        ciphertext = aead_encrypt(key, 0, plaintext, self.hash)
        self.mix_hash(ciphertext)
        return ciphertext

    def open(self, key: bytes, ciphertext: bytes, what: str) -> bytes:
        try:
            plaintext = aead_decrypt(key, 0, ciphertext, self.hash)
        except InvalidTag as exc:
            raise ProtocolError("decrypt-failed", f"cannot authenticate {what}") from exc
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """WP 5.4.5: (T_i^send = T_r^recv, T_i^recv = T_r^send) = KDF2(C, empty)."""
        return kdf2(self.chaining_key, b"")


@dataclass(slots=True)
class OpenedInitiation:
    """What a responder learns from an authenticated initiation."""

    initiator_static: bytes
    initiator_ephemeral: bytes
    timestamp: bytes
    state: SymmetricState


def build_initiation(
    *,
    sender: int,
    local_static_public: bytes,
    remote_static: bytes,
    static_static: bytes,
    ephemeral_private: bytes,
    timestamp: bytes,
) -> tuple[Initiation, SymmetricState]:
    """WP 5.4.2: the initiator's first message (mac1/mac2 are added by the cookie layer)."""
    state = SymmetricState(remote_static)
    ephemeral_public = public_key(ephemeral_private)
    state.mix_ephemeral(ephemeral_public)
    key = state.mix_key(dh(ephemeral_private, remote_static))  # es
    encrypted_static = state.seal(key, local_static_public)
    key = state.mix_key(static_static)  # ss
    encrypted_timestamp = state.seal(key, timestamp)
    message = Initiation(sender, ephemeral_public, encrypted_static, encrypted_timestamp)
    return message, state


def open_initiation(
    message: Initiation,
    responder_static: bytes,
    dh_es: bytes,
    dh_ss: Callable[[bytes], bytes],
) -> OpenedInitiation:
    """WP 5.4.2 from the receiving side. ``dh_ss`` maps the decrypted initiator static key to
    DH(S_i, S_r); it may raise :class:`ProtocolError` (for example for an unknown peer)."""
    state = SymmetricState(responder_static)
    state.mix_ephemeral(message.ephemeral)
    key = state.mix_key(dh_es)
    initiator_static = state.open(key, message.encrypted_static, "initiation static key")
    key = state.mix_key(dh_ss(initiator_static))
    timestamp = state.open(key, message.encrypted_timestamp, "initiation timestamp")
    return OpenedInitiation(initiator_static, message.ephemeral, timestamp, state)


def build_response(
    *,
    sender: int,
    receiver: int,
    state: SymmetricState,
    initiator_ephemeral: bytes,
    initiator_static: bytes,
    ephemeral_private: bytes,
    preshared_key: bytes,
    dh: Callable[[bytes, bytes], bytes] = dh,
) -> Response:
    """WP 5.4.3: the responder's message; ``state`` continues from the opened initiation.
    ``dh`` is replaced only to switch the low-order check off (checks.Checks.low_order)."""
    ephemeral_public = public_key(ephemeral_private)
    state.mix_ephemeral(ephemeral_public)
    state.mix_dh(dh(ephemeral_private, initiator_ephemeral))  # ee
    state.mix_dh(dh(ephemeral_private, initiator_static))  # se
    key = state.mix_psk(preshared_key)
    encrypted_nothing = state.seal(key, b"")
    return Response(sender, receiver, ephemeral_public, encrypted_nothing)


def open_response(
    message: Response,
    state: SymmetricState,
    dh_ee: bytes,
    dh_se: bytes,
    preshared_key: bytes,
) -> SymmetricState:
    """WP 5.4.3 from the initiator's side (or from a capture with either side's keys).

    ``state`` is not modified: a response that fails to authenticate leaves the handshake
    as it was, so a forged response cannot break a handshake in progress.
    """
    trial = SymmetricState.__new__(SymmetricState)
    trial.chaining_key, trial.hash = state.chaining_key, state.hash
    trial.mix_ephemeral(message.ephemeral)
    trial.mix_dh(dh_ee)
    trial.mix_dh(dh_se)
    key = trial.mix_psk(preshared_key)
    trial.open(key, message.encrypted_nothing, "response (wrong keys or preshared key)")
    return trial
