"""wgref.fastpath gives byte-for-byte what the reference path of wgref.device gives.

Each test builds two identical deterministic device pairs (tests/pairs.py), feeds the same
inputs to the reference path (Device.send_packet / receive_datagram, one at a time) on one and
to the fast path on the other, and compares the results and the whole protocol state.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pairs import (
    A_ADDR,
    A_TUN4,
    A_TUN6,
    B_ADDR,
    B_TUN4,
    B_TUN6,
    Pair,
    established_pair,
    ipv4_packet,
    ipv6_packet,
    make_pair,
)
from wgref.constants import REJECT_AFTER_TIME, REKEY_AFTER_TIME
from wgref.device import Device, SendDatagram
from wgref.fastpath import Batch, receive_datagrams, send_packets
from wgref.keypair import Keypair
from wgref.peer import Address

Scenario = Callable[[], Pair]


def keypair_state(keypair: Keypair | None) -> Any:
    if keypair is None:
        return None
    return (
        keypair.local_index,
        keypair.send_counter,
        keypair.receive_count,
        keypair.receive_top,
        keypair.replay._top,
        list(keypair.replay._bitmap),
    )


def device_state(device: Device) -> Any:
    peers = []
    for peer in device.peers.values():
        k = peer.keypairs
        peers.append(
            (
                peer.endpoint,
                peer.rx_bytes,
                peer.tx_bytes,
                peer.timers,
                peer.need_another_keepalive,
                peer.last_sent_handshake,
                peer.handshake_attempts,
                peer.last_handshake,
                list(peer.staged),
                [keypair_state(x) for x in (k.previous, k.current, k.next)],
            )
        )
    return peers, dict(device.dropped), sorted(device._indices), device.rng.getstate()


def reference_send(device: Device, packets: list[bytes], now: float) -> Batch:
    out = Batch()
    for packet in packets:
        out.add(device.send_packet(packet, now))
    return out


def fast_send(device: Device, packets: list[bytes], now: float) -> Batch:
    out = Batch()
    send_packets(device, packets, now, out)
    return out


def reference_receive(
    device: Device, datagrams: list[bytes], sources: list[Address], now: float
) -> Batch:
    out = Batch()
    for data, source in zip(datagrams, sources, strict=True):
        out.add(device.receive_datagram(data, source, now))
    return out


def fast_receive(
    device: Device, datagrams: list[bytes], sources: list[Address], now: float
) -> Batch:
    out = Batch()
    receive_datagrams(device, datagrams, sources, now, out)
    return out


class Fallbacks:
    """Counts the calls the fast path hands to the reference path."""

    def __init__(self, device: Device, name: str) -> None:
        self.calls = 0
        original = getattr(device, name)

        def counted(*args: Any) -> Any:
            self.calls += 1
            return original(*args)

        setattr(device, name, counted)


def same_sends(
    scenario: Scenario, packets: list[bytes], later: float = 0.0, fallbacks: int | None = None
) -> Batch:
    """Compare the paths; ``fallbacks``: how many packets must take the reference path."""
    ref, fast = scenario(), scenario()
    now = ref.now + later
    expected = reference_send(ref.a.device, packets, now)
    counter = Fallbacks(fast.a.device, "send_packet")
    got = fast_send(fast.a.device, packets, now)
    assert got == expected
    assert device_state(fast.a.device) == device_state(ref.a.device)
    if fallbacks is not None:
        assert counter.calls == fallbacks
    return got


def same_receives(
    scenario: Scenario, datagrams: list[bytes], sources: list[Address] | None = None,
    later: float = 0.0, fallbacks: int | None = None,
) -> Batch:  # fmt: skip
    ref, fast = scenario(), scenario()
    now = ref.now + later
    sources = sources or [A_ADDR] * len(datagrams)
    expected = reference_receive(ref.b.device, datagrams, sources, now)
    counter = Fallbacks(fast.b.device, "receive_datagram")
    got = fast_receive(fast.b.device, datagrams, sources, now)
    assert got == expected
    assert device_state(fast.b.device) == device_state(ref.b.device)
    if fallbacks is not None:
        assert counter.calls == fallbacks
    return got


def a_to_b_packets(rng: random.Random, count: int) -> list[bytes]:
    packets = []
    for _ in range(count):
        size = rng.choice([0, 1, 15, 16, 100, 1379, 1380, 1400, 1420, 2000])
        if rng.random() < 0.5:
            packets.append(ipv4_packet(A_TUN4, B_TUN4, rng.randbytes(size)))
        else:
            packets.append(ipv6_packet(A_TUN6, B_TUN6, rng.randbytes(size)))
    return packets


def datagrams_from_a(pair: Pair, packets: list[bytes]) -> list[bytes]:
    """What A sends for ``packets`` (with the reference path, which changes A only)."""
    out: list[bytes] = []
    for packet in packets:
        out += [a.data for a in pair.a.device.send_packet(packet, pair.now) if
                isinstance(a, SendDatagram)]  # fmt: skip
    return out


def established() -> Pair:
    return established_pair(seed=7)


def established_by_b() -> Pair:
    """B initiated: A is the responder, B the initiator (rekeys on age)."""
    pair = make_pair(seed=8)
    pair.b.absorb(pair.b.device.send_keepalive(pair.peer_ba, pair.now), pair.now)
    pair.roundtrip()
    pair.advance(1.0)
    return pair


# ----------------------------------------------------------------- sending


def test_send_established_mixed_sizes() -> None:
    packets = a_to_b_packets(random.Random(1), 60)
    got = same_sends(established, packets, fallbacks=0)
    assert [d for _, ds in got.sends for d in ds] and len(got.sends) == 1


def test_send_tso_run_of_segments() -> None:
    packets = [ipv4_packet(A_TUN4, B_TUN4, bytes([i]) * 1380) for i in range(45)]
    got = same_sends(established, packets, fallbacks=0)
    ((destination, datagrams),) = got.sends
    assert destination == B_ADDR and len(datagrams) == 45
    assert {len(d) for d in datagrams} == {1408 + 16 + 16}  # padded to 16, header, tag


def test_send_no_route_bad_packets_and_other_versions() -> None:
    packets = [
        b"",
        b"\x45" + bytes(10),
        ipv4_packet(A_TUN4, "10.9.9.9", b"nowhere"),
        ipv4_packet(A_TUN4, B_TUN4, b"one"),
        ipv6_packet(A_TUN6, B_TUN6, b"two"),
        bytes([0x60]) + bytes(15) + bytes([10, 0, 0, 2]) + bytes(20),  # v6 bytes like a v4 dst
        ipv4_packet(A_TUN4, B_TUN4, b"three"),
    ]
    got = same_sends(established, packets, fallbacks=4)
    assert sum(len(ds) for _, ds in got.sends) == 3


def test_send_before_handshake_goes_through_reference() -> None:
    got = same_sends(
        lambda: make_pair(seed=9), [ipv4_packet(A_TUN4, B_TUN4, b"x")] * 3, fallbacks=3
    )
    assert len(got.sends) == 1 and len(got.sends[0][1]) == 1  # one initiation


def test_send_when_rekey_is_due_or_session_expired() -> None:
    packets = [ipv4_packet(A_TUN4, B_TUN4, b"x" * 100)] * 4
    same_sends(established, packets, later=REKEY_AFTER_TIME + 1, fallbacks=4)
    same_sends(established, packets, later=REJECT_AFTER_TIME + 1, fallbacks=4)
    # B is the responder at A here: no rekey on age when A sends.
    same_sends(established_by_b, packets, later=REKEY_AFTER_TIME + 1, fallbacks=0)


def test_send_with_staged_packets() -> None:
    def staged() -> Pair:
        pair = make_pair(seed=10)
        pair.a.device.send_packet(ipv4_packet(A_TUN4, B_TUN4, b"staged"), pair.now)
        pair.roundtrip()  # the handshake completes and the staged packet leaves
        pair.peer_ab.staged.append(ipv4_packet(A_TUN4, B_TUN4, b"left over"))
        return pair

    same_sends(staged, [ipv4_packet(A_TUN4, B_TUN4, b"new")] * 3, fallbacks=3)


# ----------------------------------------------------------------- receiving


def test_receive_established() -> None:
    source = established()
    datagrams = datagrams_from_a(source, a_to_b_packets(random.Random(2), 80))
    got = same_receives(established, datagrams, fallbacks=0)
    assert len(got.packets) == 80


def test_receive_drops_and_fallbacks() -> None:
    source = established()
    good = datagrams_from_a(source, [ipv4_packet(A_TUN4, B_TUN4, bytes(i)) for i in range(6)])
    spoofed = datagrams_from_a(source, [ipv4_packet("10.0.0.77", B_TUN4, b"spoof")])
    bad_inner = datagrams_from_a(source, [b"\x45" + bytes(30)])
    keepalive = [
        a.data
        for a in source.a.device.send_keepalive(source.peer_ab, source.now)
        if isinstance(a, SendDatagram)
    ]
    tampered = bytearray(good[1])
    tampered[-1] ^= 1
    unknown_index = bytearray(good[2])
    unknown_index[4] ^= 0xFF
    datagrams = [
        good[0],
        good[0],  # a replay
        bytes(tampered),
        bytes(unknown_index),
        b"\x04\x00\x00\x00short",
        *spoofed,
        *bad_inner,
        *keepalive,
        good[3],
        b"\x01" + bytes(147),  # an initiation that fails its MAC
        good[2],
        good[1],
    ]
    sources = [A_ADDR] * len(datagrams)
    sources[-1] = ("203.0.113.9", 4444)  # roaming on the last one
    # Replay, tampered, unknown index, short, initiation: the reference path.
    got = same_receives(established, datagrams, sources, fallbacks=5)
    assert len(got.packets) == 4


def test_receive_on_responders_next_keypair_and_previous() -> None:
    """B's first data on a fresh session (confirms 'next'), then after a rekey, data on
    the previous session still arriving."""

    def fresh() -> Pair:
        pair = make_pair(seed=11)
        pair.a.absorb(pair.a.device.send_keepalive(pair.peer_ab, pair.now), pair.now)
        # Move only the initiation and the response: B's keypair is still 'next'.
        pair.b.receive(pair.a.take_outbox()[0], A_ADDR, pair.now)
        pair.a.receive(pair.b.take_outbox()[0], B_ADDR, pair.now)
        pair.a.take_outbox()
        return pair

    source = fresh()
    datagrams = datagrams_from_a(source, [ipv4_packet(A_TUN4, B_TUN4, b"n")] * 5)
    got = same_receives(fresh, datagrams, fallbacks=1)  # the first confirms 'next'
    assert len(got.packets) == 5

    def rekeyed() -> Pair:
        pair = established()
        pair.old = datagrams_from_a(pair, [ipv4_packet(A_TUN4, B_TUN4, b"o")] * 3)  # type: ignore[attr-defined]
        pair.a.absorb(pair.a.device.initiate_handshake(pair.peer_ab, pair.now, force=True),
                      pair.now)  # fmt: skip
        pair.roundtrip()
        return pair

    old: list[bytes] = rekeyed().old  # type: ignore[attr-defined]
    got = same_receives(rekeyed, old, fallbacks=3)
    assert len(got.packets) == 3


def test_receive_when_initiator_should_rekey_or_session_expired() -> None:
    """B initiated: data arriving on B's (initiator) session near REJECT_AFTER_TIME makes
    the reference path start a handshake."""

    def scenario() -> Pair:
        return established_by_b()

    pair = scenario()
    datagrams = []
    for action in pair.a.device.send_packet(ipv4_packet(A_TUN4, B_TUN4, b"late"), pair.now):
        if isinstance(action, SendDatagram):
            datagrams.append(action.data)
    same_receives(scenario, datagrams, later=REJECT_AFTER_TIME - 10, fallbacks=1)
    same_receives(scenario, datagrams, later=REJECT_AFTER_TIME + 1, fallbacks=1)
    same_receives(scenario, datagrams, later=1.0, fallbacks=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60), st.booleans())
def test_receive_random_mixes(seed: int, count: int, ipv6_outer: bool) -> None:
    rng = random.Random(seed)
    source = established()
    datagrams = datagrams_from_a(source, a_to_b_packets(rng, count))
    mixed = []
    for data in datagrams:
        roll = rng.random()
        if roll < 0.1:
            mixed.append(data[: rng.randrange(len(data))])
        elif roll < 0.2 and mixed:
            mixed.append(rng.choice(mixed))
        mixed.append(data)
    rng.shuffle(mixed)
    sources: list[Address] = [("::1", 5) if ipv6_outer else A_ADDR] * len(mixed)
    same_receives(established, mixed, sources)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 80))
def test_send_random_mixes(seed: int, count: int) -> None:
    rng = random.Random(seed)
    packets = a_to_b_packets(rng, count)
    for _ in range(rng.randrange(4)):
        packets.insert(rng.randrange(len(packets) + 1), ipv4_packet(A_TUN4, "10.1.1.1", b"?"))
    same_sends(established, packets)


def test_batch_groups_runs_per_destination() -> None:
    batch = Batch()
    batch.send(A_ADDR, [b"1"])
    batch.send(A_ADDR, [b"2", b"3"])
    batch.send(B_ADDR, [b"4"])
    batch.send(A_ADDR, [b"5"])
    assert batch.sends == [(A_ADDR, [b"1", b"2", b"3"]), (B_ADDR, [b"4"]), (A_ADDR, [b"5"])]
    assert not Batch() and batch
