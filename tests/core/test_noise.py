"""The Noise_IKpsk2 computations (wgref.noise) and the per-peer state machine (wgref.handshake)."""

from __future__ import annotations

import random

import pytest

from wgref.constants import INITIATIONS_PER_SECOND
from wgref.crypto import INITIAL_CHAINING_KEY, INITIAL_HASH, clamp, dh, hash_, kdf2, public_key
from wgref.errors import ProtocolError
from wgref.handshake import Handshake, HandshakeState
from wgref.messages import Initiation, Response, parse
from wgref.noise import (
    ZERO_PSK,
    SymmetricState,
    build_initiation,
    build_response,
    open_initiation,
    open_response,
)
from wgref.tai64n import tai64n

RNG = random.Random(7)


def key() -> bytes:
    return clamp(RNG.randbytes(32))


I_PRIV, R_PRIV = key(), key()
I_PUB, R_PUB = public_key(I_PRIV), public_key(R_PRIV)
PSK = bytes(range(32))


def full_handshake(psk_i: bytes = ZERO_PSK, psk_r: bytes = ZERO_PSK):
    e_i, e_r = key(), key()
    ts = tai64n(1_700_000_000.0)
    init, state_i = build_initiation(
        sender=1,
        local_static_public=I_PUB,
        remote_static=R_PUB,
        static_static=dh(I_PRIV, R_PUB),
        ephemeral_private=e_i,
        timestamp=ts,
    )
    opened = open_initiation(init, R_PUB, dh(R_PRIV, init.ephemeral), lambda s: dh(R_PRIV, s))
    assert opened.initiator_static == I_PUB
    assert opened.timestamp == ts
    assert opened.state.hash == state_i.hash
    assert opened.state.chaining_key == state_i.chaining_key
    state_r = opened.state
    resp = build_response(
        sender=2,
        receiver=1,
        state=state_r,
        initiator_ephemeral=init.ephemeral,
        initiator_static=I_PUB,
        ephemeral_private=e_r,
        preshared_key=psk_r,
    )
    final_i = open_response(
        resp, state_i, dh(e_i, resp.ephemeral), dh(I_PRIV, resp.ephemeral), psk_i
    )
    return init, resp, state_i, final_i, state_r


def test_initial_state() -> None:
    state = SymmetricState(R_PUB)
    assert state.chaining_key == INITIAL_CHAINING_KEY
    assert state.hash == hash_(INITIAL_HASH, R_PUB)


@pytest.mark.parametrize("psk", [ZERO_PSK, PSK])
def test_handshake_derives_matching_keys(psk: bytes) -> None:
    init, resp, _, final_i, state_r = full_handshake(psk, psk)
    assert final_i.hash == state_r.hash
    assert final_i.chaining_key == state_r.chaining_key
    send_i, recv_i = final_i.split()
    first, second = state_r.split()
    assert (send_i, recv_i) == (first, second)
    assert send_i != recv_i
    assert (send_i, recv_i) == kdf2(final_i.chaining_key, b"")
    assert len(init.to_bytes()) == 148
    assert len(resp.to_bytes()) == 92
    assert resp.receiver == 1 and resp.sender == 2
    assert parse(init.to_bytes()) == init


def test_psk_changes_the_keys() -> None:
    _, _, _, no_psk, _ = full_handshake()
    _, _, _, with_psk, _ = full_handshake(PSK, PSK)
    assert no_psk.split() != with_psk.split()


def test_mismatched_psk_fails_to_open_response_and_leaves_state() -> None:
    _, resp, state_i, _, _ = full_handshake()  # responder used the zero PSK
    before = (state_i.chaining_key, state_i.hash)
    e_i = key()  # wrong ephemeral too: any wrong input must fail the same way
    for psk, ee_key in ((PSK, None), (ZERO_PSK, e_i)):
        with pytest.raises(ProtocolError) as info:
            ee = dh(ee_key, resp.ephemeral) if ee_key else bytes(32)
            open_response(resp, state_i, ee, dh(I_PRIV, resp.ephemeral), psk)
        assert info.value.reason == "decrypt-failed"
    assert (state_i.chaining_key, state_i.hash) == before


def test_open_initiation_rejects_wrong_responder_key() -> None:
    init, *_ = full_handshake()
    other = key()
    with pytest.raises(ProtocolError) as info:
        open_initiation(init, public_key(other), dh(other, init.ephemeral), lambda s: dh(other, s))
    assert info.value.reason == "decrypt-failed"


@pytest.mark.parametrize("field", ["ephemeral", "encrypted_static", "encrypted_timestamp"])
def test_open_initiation_rejects_tampering(field: str) -> None:
    init, *_ = full_handshake()
    value = bytearray(getattr(init, field))
    value[3] ^= 0x20
    fields = {
        "sender": init.sender,
        "ephemeral": init.ephemeral,
        "encrypted_static": init.encrypted_static,
        "encrypted_timestamp": init.encrypted_timestamp,
    }
    fields[field] = bytes(value)
    tampered = Initiation(**fields)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        open_initiation(tampered, R_PUB, dh(R_PRIV, tampered.ephemeral), lambda s: dh(R_PRIV, s))


def test_open_initiation_propagates_dh_ss_errors() -> None:
    init, *_ = full_handshake()

    def unknown(_static: bytes) -> bytes:
        raise ProtocolError("unknown-peer")

    with pytest.raises(ProtocolError) as info:
        open_initiation(init, R_PUB, dh(R_PRIV, init.ephemeral), unknown)
    assert info.value.reason == "unknown-peer"


# --------------------------------------------------------------------------- Handshake


def pair_of_handshakes(psk: bytes | None = None) -> tuple[Handshake, Handshake]:
    hs_i = Handshake(R_PUB, psk)
    hs_i.set_local_static(I_PRIV, I_PUB)
    hs_r = Handshake(I_PUB, psk)
    hs_r.set_local_static(R_PRIV, R_PUB)
    return hs_i, hs_r


def open_at_responder(hs_r: Handshake, init: Initiation):
    assert hs_r.static_static is not None
    ss = hs_r.static_static
    return open_initiation(init, R_PUB, dh(R_PRIV, init.ephemeral), lambda _s: ss)


@pytest.mark.parametrize("psk", [None, PSK])
def test_state_machine_full_run(psk: bytes | None) -> None:
    hs_i, hs_r = pair_of_handshakes(psk)
    assert hs_i.state is HandshakeState.ZEROED and hs_i.usable
    init = hs_i.create_initiation(100, key(), tai64n(1000.0))
    assert hs_i.state is HandshakeState.CREATED_INITIATION
    hs_r.consume_initiation(open_at_responder(hs_r, init), init.sender, now=0.0)
    assert hs_r.state is HandshakeState.CONSUMED_INITIATION
    assert hs_r.remote_index == 100
    resp = hs_r.create_response(200, key())
    keys_r = hs_r.derive_keys(is_initiator=False)
    assert hs_r.state is HandshakeState.ZEROED
    hs_i.consume_response(resp)
    keys_i = hs_i.derive_keys(is_initiator=True)
    assert hs_i.state is HandshakeState.ZEROED and hs_i.symmetric is None
    assert keys_i.send_key == keys_r.receive_key
    assert keys_i.receive_key == keys_r.send_key
    assert (keys_i.local_index, keys_i.remote_index) == (100, 200)
    assert (keys_r.local_index, keys_r.remote_index) == (200, 100)
    assert keys_i.is_initiator and not keys_r.is_initiator


def test_consume_response_without_initiation() -> None:
    hs_i, hs_r = pair_of_handshakes()
    resp = Response(1, 2, I_PUB, bytes(16))
    with pytest.raises(ProtocolError) as info:
        hs_i.consume_response(resp)
    assert info.value.reason == "no-handshake"
    with pytest.raises(ProtocolError) as info:
        hs_r.create_response(1, key())
    assert info.value.reason == "no-handshake"


def test_failed_response_keeps_initiation_in_flight() -> None:
    hs_i, hs_r = pair_of_handshakes(PSK)
    init = hs_i.create_initiation(1, key(), tai64n(1000.0))
    hs_r.consume_initiation(open_at_responder(hs_r, init), init.sender, now=0.0)
    hs_r.preshared_key = ZERO_PSK  # the responder answers with another PSK
    bad = hs_r.create_response(2, key())
    with pytest.raises(ProtocolError):
        hs_i.consume_response(bad)
    assert hs_i.state is HandshakeState.CREATED_INITIATION
    # A forged response does not break the handshake in progress: the right one still works.
    hs_r2 = Handshake(I_PUB, PSK)
    hs_r2.set_local_static(R_PRIV, R_PUB)
    hs_r2.consume_initiation(open_at_responder(hs_r2, init), init.sender, now=0.0)
    hs_i.consume_response(hs_r2.create_response(3, key()))
    assert hs_i.derive_keys(True).send_key == hs_r2.derive_keys(False).receive_key


def test_replayed_initiation_rejected() -> None:
    hs_i, hs_r = pair_of_handshakes()
    init = hs_i.create_initiation(1, key(), tai64n(1000.0))
    hs_r.consume_initiation(open_at_responder(hs_r, init), 1, now=0.0)
    with pytest.raises(ProtocolError) as info:
        hs_r.consume_initiation(open_at_responder(hs_r, init), 1, now=5.0)
    assert info.value.reason == "replayed-initiation"
    older = hs_i.create_initiation(2, key(), tai64n(999.0))
    with pytest.raises(ProtocolError) as info:
        hs_r.consume_initiation(open_at_responder(hs_r, older), 2, now=10.0)
    assert info.value.reason == "replayed-initiation"


def test_initiation_flood_rejected() -> None:
    hs_i, hs_r = pair_of_handshakes()
    gap = 1.0 / INITIATIONS_PER_SECOND
    first = hs_i.create_initiation(1, key(), tai64n(1000.0))
    hs_r.consume_initiation(open_at_responder(hs_r, first), 1, now=0.0)
    second = hs_i.create_initiation(2, key(), tai64n(1001.0))
    with pytest.raises(ProtocolError) as info:
        hs_r.consume_initiation(open_at_responder(hs_r, second), 2, now=gap * 0.9)
    assert info.value.reason == "initiation-flood"
    assert hs_r.remote_index == 1
    hs_r.consume_initiation(open_at_responder(hs_r, second), 2, now=gap)
    assert hs_r.remote_index == 2


def test_low_order_peer_key_is_unusable() -> None:
    hs = Handshake(bytes(32))
    hs.set_local_static(I_PRIV, I_PUB)
    assert not hs.usable
    with pytest.raises(ProtocolError) as info:
        hs.create_initiation(1, key(), tai64n(0.0))
    assert info.value.reason == "low-order-key"
