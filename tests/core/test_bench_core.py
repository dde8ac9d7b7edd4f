"""Benchmarks of the protocol core (pytest-benchmark; no timing assertions).

``--benchmark-disable`` is in the pytest addopts, so these run once as plain tests; measure
with ``python3 -m pytest tests/core/test_bench_core.py --benchmark-enable``.
"""

from __future__ import annotations

import itertools

import pytest

from tests.pairs import A_ADDR, A_TUN4, B_ADDR, B_TUN4, established_pair, ipv4_packet, make_pair
from wgref.results import Batch

pytest.importorskip("pytest_benchmark")

PACKET_1420 = ipv4_packet(A_TUN4, B_TUN4, bytes(1400))
assert len(PACKET_1420) == 1420
BATCH = 64  # the shells' batch size (a TSO frame's segments, one recvmmsg)


def _datagrams(out: Batch) -> list[bytes]:
    return [data for _, data in out.datagrams()]


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
        assert not _datagrams(b.receive_datagram(confirm, A_ADDR, now))

    benchmark(handshake)
    assert pair.peer_ba.keypairs.current is not None
    assert not a.dropped and not b.dropped


def test_bench_encrypt_1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """send_packet of a 1420-byte IPv4 packet on an established session."""
    pair = established_pair(seed=41)
    a = pair.a.device
    now = pair.now

    def encrypt() -> Batch:
        return a.send_packet(PACKET_1420, now)

    (out,) = _datagrams(benchmark(encrypt))
    assert len(out) == 16 + 1420 + 16


def test_bench_decrypt_1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """receive_datagram of a 1420-byte packet (each round a fresh counter: no replay)."""
    pair = established_pair(seed=42)
    a, b = pair.a.device, pair.b.device
    now = pair.now

    def setup() -> tuple[tuple[bytes, object, float], dict[str, object]]:
        (data,) = _datagrams(a.send_packet(PACKET_1420, now))
        return (data, A_ADDR, now), {}

    result = benchmark.pedantic(b.receive_datagram, setup=setup, rounds=2000)
    assert result.packets == [PACKET_1420]
    assert not b.dropped


def test_bench_send_batch_64x1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """send_packets of 64 packets to one peer (a TSO frame's segments), as the TUN shell."""
    pair = established_pair(seed=43)
    a = pair.a.device
    now = pair.now
    packets = [PACKET_1420] * BATCH

    def send() -> Batch:
        out = Batch()
        a.send_packets(packets, now, out)
        return out

    out = benchmark(send)
    assert len(_datagrams(out)) == BATCH and len(out.sends) == 1


def test_bench_receive_batch_64x1420(benchmark) -> None:  # type: ignore[no-untyped-def]
    """receive_datagrams of 64 transport messages from one peer (one recvmmsg)."""
    pair = established_pair(seed=44)
    a, b = pair.a.device, pair.b.device
    now = pair.now
    sources = [A_ADDR] * BATCH

    def setup() -> tuple[tuple[list[bytes], object, float, Batch], dict[str, object]]:
        out = Batch()
        a.send_packets([PACKET_1420] * BATCH, now, out)
        return (_datagrams(out), sources, now, Batch()), {}

    out = Batch()

    def receive(datagrams: list[bytes], sources: object, now: float, batch: Batch) -> Batch:
        b.receive_datagrams(datagrams, sources, now, batch)  # type: ignore[arg-type]
        nonlocal out
        out = batch
        return batch

    benchmark.pedantic(receive, setup=setup, rounds=300)
    assert out.packets == [PACKET_1420] * BATCH
    assert not b.dropped
