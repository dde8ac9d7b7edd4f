"""The BoringTun-shaped single-peer facade."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from wgref.crypto import generate_private_key, generate_psk, public_key
from wgref.tunnel import (
    Done,
    Error,
    Tunnel,
    TunnResult,
    WriteToNetwork,
    WriteToTunnelV4,
    WriteToTunnelV6,
    prefixed_indices,
)


def udp4(src: str, dst: str, payload: bytes = b"ping") -> bytes:
    return struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    ) + payload


def udp6(src: str, dst: str, payload: bytes = b"ping6") -> bytes:
    return struct.pack(
        ">IHBB16s16s", 6 << 28, len(payload), 17, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    ) + payload


def pair(psk: bytes | None = None) -> tuple[Tunnel, Tunnel]:
    a_key, b_key = generate_private_key(), generate_private_key()
    a = Tunnel(a_key, public_key(b_key), psk, index=0xA1)
    b = Tunnel(b_key, public_key(a_key), psk, index=0xB2)
    return a, b


def pump(sender: Tunnel, receiver: Tunnel, first: TunnResult, now: float) -> list[TunnResult]:
    """Carry WriteToNetwork results back and forth until both sides are Done."""
    delivered: list[TunnResult] = []
    queue = [(sender, receiver, first)]
    while queue:
        src, dst, result = queue.pop(0)
        while isinstance(result, WriteToNetwork):
            reply = dst.read(result.datagram, now)
            while not isinstance(reply, Done):
                if isinstance(reply, WriteToNetwork):
                    queue.append((dst, src, reply))
                elif isinstance(reply, (WriteToTunnelV4, WriteToTunnelV6)):
                    delivered.append(reply)
                reply = dst.read(b"", now)
            result = src.read(b"", now)
        if isinstance(result, (WriteToTunnelV4, WriteToTunnelV6)):
            delivered.append(result)
    return delivered


@pytest.mark.parametrize("psk", [None, generate_psk()])
def test_first_packet_handshakes_and_arrives(psk: bytes | None) -> None:
    a, b = pair(psk)
    packet = udp4("10.0.0.1", "10.0.0.2")
    first = a.write(packet, 1.0)
    assert isinstance(first, WriteToNetwork) and len(first.datagram) == 148
    delivered = pump(a, b, first, 1.0)
    assert delivered == [WriteToTunnelV4(packet, ipaddress.IPv4Address("10.0.0.1"))]
    back = udp6("fd00::2", "fd00::1")
    reply = b.write(back, 1.1)
    assert isinstance(reply, WriteToNetwork)
    assert a.read(reply.datagram, 1.1) == WriteToTunnelV6(back, ipaddress.IPv6Address("fd00::2"))


def test_mismatched_psk_never_delivers() -> None:
    a_key, b_key = generate_private_key(), generate_private_key()
    a = Tunnel(a_key, public_key(b_key), generate_psk())
    b = Tunnel(b_key, public_key(a_key), generate_psk())
    first = a.write(udp4("10.0.0.1", "10.0.0.2"), 1.0)
    assert pump(a, b, first, 1.0) == []
    assert a.stats(2.0).time_since_last_handshake is None


def test_indices_carry_the_24_bit_prefix() -> None:
    a, _ = pair()
    first = a.write(udp4("10.0.0.1", "10.0.0.2"), 1.0)
    assert isinstance(first, WriteToNetwork)
    sender = struct.unpack_from("<I", first.datagram, 4)[0]
    assert sender >> 8 == 0xA1
    with pytest.raises(ValueError):
        prefixed_indices(1 << 24)


def test_garbage_is_an_error_result_not_an_exception() -> None:
    a, _ = pair()
    assert isinstance(a.read(b"\x04\x00\x00\x00" + bytes(40), 1.0), Error)
    assert isinstance(a.read(b"\x09", 1.0), Error)
    assert isinstance(a.write(b"\x00\x01", 1.0), Error)


def test_tick_sends_keepalive_and_stats() -> None:
    a, b = pair()
    pump(a, b, a.write(udp4("10.0.0.1", "10.0.0.2"), 1.0), 1.0)
    # b received data and sent nothing back: WP 6.5 passive keepalive after 10 s.
    assert isinstance(b.tick(5.0), Done)
    keepalive = b.tick(11.1)
    assert isinstance(keepalive, WriteToNetwork) and len(keepalive.datagram) == 32
    stats = a.stats(12.0)
    assert stats.time_since_last_handshake == pytest.approx(11.0)
    assert stats.tx_bytes == 148 + 64 and stats.rx_bytes == 92  # initiation + one data message
    assert stats.estimated_rtt_ms == 0 and stats.estimated_loss == 0.0


def test_force_handshake_sends_an_initiation_now() -> None:
    a, b = pair()
    pump(a, b, a.write(udp4("10.0.0.1", "10.0.0.2"), 1.0), 1.0)
    forced = a.force_handshake(2.0)
    assert isinstance(forced, WriteToNetwork) and len(forced.datagram) == 148
