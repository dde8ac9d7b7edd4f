"""Benchmarks of the transparent client's per-packet outbound work (pytest-benchmark; no
timing assertions): reading a batch of queued packets off the NFQUEUE socket, the rewrite
of one UDP datagram with its checksums updated (RFC 1624) or summed again, and its flow's
translation worked out once and applied (what the client does per packet of a known flow).

``--benchmark-disable`` is in the pytest addopts, so these run once as plain tests; compare
them with ``python3 -m pytest tests/shells/test_bench_client.py --benchmark-enable``.
"""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest
from scapy.layers.inet import IP, UDP

from tests.shells.test_client_offload import _queue_on, queued_message
from wgref.client import packet

pytest.importorskip("pytest_benchmark")

# an iperf3 UDP datagram as the bench's udp-up sends it through a 1420-byte tunnel
DATAGRAM = bytes(IP(src="10.200.0.2", dst="10.0.0.1") / UDP(sport=40000, dport=5201)
                 / random.Random(18).randbytes(1392))
TUNNEL_SRC = ipaddress.ip_address("10.99.0.2").packed
BATCH = 64


@pytest.mark.parametrize("valid", [True, False], ids=["updated", "summed"])
def test_bench_rewrite_udp(benchmark, valid: bool) -> None:  # type: ignore[no-untyped-def]
    """packet.parse and packet.rewrite of one 1420-byte datagram (new source and port)."""

    def rewrite() -> bytes:
        info = packet.parse(DATAGRAM)
        assert info is not None
        return packet.rewrite(DATAGRAM, info, src=TUNNEL_SRC, sport=40001, mss=1380,
                              valid=valid)

    out = benchmark(rewrite)
    assert IP(out)[UDP].sport == 40001 and IP(out).src == "10.99.0.2"
    check = IP(out)
    del check[IP].chksum, check[UDP].chksum
    assert bytes(IP(bytes(check))) == out  # both checksums as scapy sums them


def test_bench_translate_udp(benchmark) -> None:  # type: ignore[no-untyped-def]
    """packet.parse and a flow's Translation.apply of the same datagram, in the client's
    own copy (as NfQueue hands it over)."""
    old = packet.parse(DATAGRAM)
    assert old is not None
    translation = packet.Translation.between(4, packet.UDP, (old.src, 40000, old.dst, 5201),
                                             (TUNNEL_SRC, 40001, old.dst, 5201))

    def translate() -> bytearray:
        data = bytearray(DATAGRAM)
        info = packet.parse(data)
        assert info is not None and translation.applies(info)
        translation.apply(data, info)
        return data

    out = benchmark(translate)
    info = packet.parse(DATAGRAM)
    assert info is not None
    assert out == packet.rewrite(DATAGRAM, info, src=TUNNEL_SRC, sport=40001, valid=True)


def test_bench_receive_batch(benchmark) -> None:  # type: ignore[no-untyped-def]
    """NfQueue.receive of 64 queued datagrams, one netlink message per read as the kernel
    sends them."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    messages = [queued_message(i, DATAGRAM) for i in range(BATCH)]
    with ours, kernel:
        ours.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        queue = _queue_on(ours)

        def fill() -> tuple[tuple[int], dict[str, object]]:
            for message in messages:
                kernel.send(message)
            return (BATCH,), {}

        results = benchmark.pedantic(queue.receive, setup=fill, rounds=200)
    assert [p.packet_id for p in results] == list(range(BATCH))
    assert all(p.payload == DATAGRAM for p in results)
