"""Benchmarks of the protocol core (pytest-benchmark; no timing assertions).

``--benchmark-disable`` is in the pytest addopts, so these run once as plain tests; measure
with ``python3 -m pytest tests/test_bench_core.py --benchmark-enable``.
"""

from __future__ import annotations

import itertools

import pytest

from tests.pairs import A_ADDR, A_TUN4, B_ADDR, B_TUN4, established_pair, ipv4_packet, make_pair
from wgref.device import Deliver, SendDatagram

pytest.importorskip("pytest_benchmark")

PACKET_1420 = ipv4_packet(A_TUN4, B_TUN4, bytes(1400))
assert len(PACKET_1420) == 1420


def _datagrams(actions: list) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, SendDatagram)]


def test_bench_handshake_1rtt(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Initiation, response and the confirming keepalive between two Devices."""
    pair = make_pair(seed=40)
    a, b = pair.a.device, pair.b.device
    peer = pair.peer_ab
    clock = itertools.count(start=1000)

    def handshake() -> None:
        now = float(next(clock))  # 1 s apart: fresh timestamps, no flood limit
        (initiation,) = _datagrams(a.initiate_handshake(peer, now, force=True))
        (response,) = _datagrams(b.receive_datagram(initiation, A_ADDR, now))
        (confirm,) = _datagrams(a.receive_datagram(response, B_ADDR, now))
        assert b.receive_datagram(confirm, A_ADDR, now) == []

    benchmark(handshake)
    assert pair.peer_ba.keypairs.current is not None
    assert not a.dropped and not b.dropped


def test_bench_encrypt_1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """send_packet of a 1420-byte IPv4 packet on an established session."""
    pair = established_pair(seed=41)
    a = pair.a.device
    now = pair.now

    def encrypt() -> list:
        return a.send_packet(PACKET_1420, now)

    (out,) = benchmark(encrypt)
    assert isinstance(out, SendDatagram) and len(out.data) == 16 + 1420 + 16


def test_bench_decrypt_1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """receive_datagram of a 1420-byte packet (each round a fresh counter: no replay)."""
    pair = established_pair(seed=42)
    a, b = pair.a.device, pair.b.device
    now = pair.now

    def setup() -> tuple[tuple[bytes, tuple[str, int], float], dict[str, object]]:
        (out,) = a.send_packet(PACKET_1420, now)
        assert isinstance(out, SendDatagram)
        return (out.data, A_ADDR, now), {}

    result = benchmark.pedantic(b.receive_datagram, setup=setup, rounds=2000)
    (delivered,) = result
    assert isinstance(delivered, Deliver) and delivered.packet == PACKET_1420
    assert not b.dropped
