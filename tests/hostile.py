"""Hostile input for property tests: state snapshots of a Device (everything only an
authenticated datagram may change), mutations of valid datagrams and random datagrams biased
to pass the header checks. Shared by tests/core/test_device_properties.py and
tests/core/test_tunnel_properties.py."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from wgref import messages
from wgref.device import Device
from wgref.keypair import Keypair

# Byte offsets where mac2 starts in each handshake message (mac2 runs to the end).
MAC2_OFFSET = {messages.MESSAGE_INITIATION: 132, messages.MESSAGE_RESPONSE: 76}


def _keypair_state(k: Keypair | None) -> tuple[Any, ...] | None:
    if k is None:
        return None
    replay = k.replay
    return (
        id(k),
        k.local_index,
        k.remote_index,
        k.send_counter,
        k.created,
        replay._top,
        tuple(replay._bitmap),
    )


def snapshot(device: Device) -> tuple[Any, ...]:
    """Everything about a device's peers that only an authenticated datagram may change."""
    peers = []
    for key, peer in sorted(device.peers.items()):
        hs = peer.handshake
        sym = hs.symmetric
        peers.append(
            (
                key,
                peer.endpoint,
                tuple(
                    _keypair_state(k)
                    for k in (peer.keypairs.previous, peer.keypairs.current, peer.keypairs.next)
                ),
                (
                    hs.state,
                    hs.local_index,
                    hs.remote_index,
                    hs.ephemeral_private,
                    hs.remote_ephemeral,
                    hs.latest_timestamp,
                    hs.last_initiation_consumption,
                    None if sym is None else (sym.chaining_key, sym.hash),
                ),
                peer.rx_bytes,
                peer.tx_bytes,
                (
                    peer.cookie.cookie,
                    peer.cookie.cookie_time,
                    peer.cookie.last_mac1,
                    peer.cookie.have_sent_mac1,
                ),
                dataclasses.astuple(peer.timers),
                tuple(peer.staged),
                peer.last_handshake,
                peer.last_sent_handshake,
                peer.handshake_attempts,
                peer.need_another_keepalive,
                peer.sent_lastminute_handshake,
            )
        )
    return (tuple(peers), tuple(sorted(device._indices)))


def may_authenticate(original: bytes, mutated: bytes) -> bool:
    """Whether ``mutated`` is the original datagram up to the parts nobody authenticates."""
    if mutated == original:
        return True
    offset = MAC2_OFFSET.get(original[0])
    return (
        offset is not None
        and len(mutated) == len(original)
        and mutated[:offset] == original[:offset]
    )


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "type", "reserved"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "type" and data:
            data[0] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 0x81, 0xFF]))
        elif op == "reserved" and len(data) >= 4:
            data[draw(st.integers(1, 3))] = draw(st.integers(1, 255))
    return bytes(data)


def hostile_bytes() -> st.SearchStrategy[bytes]:
    """Random datagrams, biased to pass the header checks: each type at its exact size."""
    header = st.sampled_from([b"\x01\0\0\0", b"\x02\0\0\0", b"\x03\0\0\0", b"\x04\0\0\0"])
    sized = header.flatmap(
        lambda h: st.binary(
            min_size={1: 144, 2: 88, 3: 60, 4: 28}[h[0]],
            max_size={1: 144, 2: 88, 3: 60, 4: 200}[h[0]],
        ).map(lambda rest: h + rest)
    )
    return st.one_of(st.binary(max_size=300), sized)
