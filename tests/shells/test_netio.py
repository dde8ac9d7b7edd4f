"""The shared I/O layer on loopback: packet info on receive, sends from a chosen source,
UDP_SEGMENT runs, the event loop; the ICMP errors and route lookups of `wgref IFNAME`."""

from __future__ import annotations

import ipaddress
import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

from wgref.eventloop import EventLoop
from wgref.icmp import ErrorRateLimit, unreachable, wants_error
from wgref.results import Endpoint
from wgref.routes import RouteCache
from wgref.udp import BatchReceiver, UdpSockets, open_udp_socket, send_batch


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, BatchReceiver]]:
    sender = open_udp_socket(socket.AF_INET, 0)
    receiver = open_udp_socket(socket.AF_INET, 0)
    try:
        yield sender, BatchReceiver(receiver)
    finally:
        sender.close()
        receiver.close()


def _receive_all(receiver: BatchReceiver, count: int) -> tuple[list[bytes], list[Endpoint]]:
    datagrams: list[bytes] = []
    sources: list[Endpoint] = []
    poller = select.poll()
    poller.register(receiver.sock, select.POLLIN)
    while len(datagrams) < count and poller.poll(2000):
        got, where = receiver.receive()
        datagrams += got
        sources += where
    return datagrams, sources


def test_receive_reports_the_local_address(pair: tuple[socket.socket, BatchReceiver]) -> None:
    sender, receiver = pair
    port = receiver.sock.getsockname()[1]
    for address in ("127.0.0.1", "127.0.0.5"):
        sender.sendto(b"x" * 10, (address, port))
    datagrams, sources = _receive_all(receiver, 2)
    assert datagrams == [b"x" * 10] * 2
    assert [s.local for s in sources] == ["127.0.0.1", "127.0.0.5"]
    assert all(s.ifindex == socket.if_nametoindex("lo") for s in sources)
    assert sources[0].address == ("127.0.0.1", sender.getsockname()[1])


def test_send_from_the_remembered_source(pair: tuple[socket.socket, BatchReceiver]) -> None:
    sender, receiver = pair
    port = receiver.sock.getsockname()[1]
    runs = [b"a" * 100] * 5 + [b"b" * 40]  # one UDP_SEGMENT run (the last shorter)
    send_batch(sender, Endpoint("127.0.0.1", port, "127.0.0.9", 1), runs)
    datagrams, sources = _receive_all(receiver, len(runs))
    assert datagrams == runs
    assert {s.host for s in sources} == {"127.0.0.9"}  # the peer sees the chosen source


def test_gone_source_falls_back_and_is_reported(pair: tuple[socket.socket, BatchReceiver]) -> None:
    sender, receiver = pair
    port = receiver.sock.getsockname()[1]
    udp = UdpSockets()
    udp.sock4 = sender
    gone: list[Endpoint] = []
    udp.on_source_gone = gone.append
    destination = Endpoint("127.0.0.1", port, "192.0.2.123", 1)  # not an address of ours
    udp.send(destination, [b"z" * 20, b"z" * 20])
    datagrams, sources = _receive_all(receiver, 2)
    assert datagrams == [b"z" * 20] * 2 and sources[0].host == "127.0.0.1"
    assert gone == [destination]


def test_route_cache_answers_and_forgets_on_change() -> None:
    routes = RouteCache()
    try:
        route = routes.lookup("127.0.0.1")
        assert route is not None and route.oif == socket.if_nametoindex("lo")
        assert routes.lookup("127.0.0.1") == route and routes.lookups == 1  # cached
        assert routes.lookup("127.0.0.1", "192.0.2.123") is None  # not a local source
        routes.changed()
        routes.lookup("127.0.0.1")
        assert routes.lookups == 3
    finally:
        routes.close()


def test_event_loop_runs_handlers_timers_and_housekeeping() -> None:
    loop = EventLoop()
    a, b = socket.socketpair()
    seen: list[str] = []
    deadline = [0.0]
    try:

        def on_read(_mask: int) -> None:
            seen.append(a.recv(10).decode())

        def on_timer(now: float) -> None:
            seen.append("timer")
            deadline[0] = 0.0

        def housekeeping(_now: float) -> None:
            seen.append("housekeeping")
            loop.stop()

        loop.add(a.fileno(), on_read)
        b.send(b"hi")
        loop.run(lambda: deadline[0] or None, on_timer, housekeeping, 0.05)
    finally:
        loop.close()
        a.close()
        b.close()
    assert seen[0] == "hi" and seen[-1] == "housekeeping"


# ----------------------------------------------------------------- ICMP errors


def _ping(version: int, src: str, dst: str) -> bytes:
    if version == 4:
        return bytes(IP(src=src, dst=dst) / ICMP() / (b"p" * 56))
    from scapy.layers.inet6 import ICMPv6EchoRequest

    return bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest() / (b"p" * 56))


def test_a_daemon_freezes_its_setup_and_collects_young_objects_less_often() -> None:
    """What `wgref IFNAME` and `wgref client` call before their loop (in a process of its
    own: it would freeze the test suite's objects too)."""
    code = ("import gc; from wgref.eventloop import YOUNG_THRESHOLD, serve_long_lived; "
            "frozen = gc.get_freeze_count(); serve_long_lived(); "
            "print(gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_freeze_count() > frozen)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert run.stdout.split() == ["True", "True"]


def test_icmp_unreachable_v4_is_what_the_kernel_sends() -> None:
    packet = _ping(4, "192.168.241.1", "192.168.241.99")
    error = unreachable(packet, ipaddress.IPv4Address("192.168.241.1").packed)
    assert error is not None
    parsed = IP(error)
    assert (parsed.src, parsed.dst, parsed[ICMP].type, parsed[ICMP].code) == (
        "192.168.241.1", "192.168.241.1", 3, 1,
    )  # fmt: skip
    assert bytes(parsed[IPerror])[:20] == packet[:20]
    rebuilt = IP(error)
    del rebuilt.chksum, rebuilt[ICMP].chksum
    assert bytes(IP(bytes(rebuilt))) == error  # both checksums as scapy computes them


def test_icmpv6_unreachable() -> None:
    packet = _ping(6, "fd00::1", "fd00::99")
    error = unreachable(packet, ipaddress.IPv6Address("fd00::1").packed)
    assert error is not None
    parsed = IPv6(error)
    assert parsed.src == parsed.dst == "fd00::1"
    assert parsed[ICMPv6DestUnreach].code == 3
    rebuilt = IPv6(error)
    del rebuilt[ICMPv6DestUnreach].cksum
    assert bytes(IPv6(bytes(rebuilt))) == error


@pytest.mark.parametrize(
    "packet",
    [
        bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3, code=1) / (b"q" * 28)),
        bytes(IP(src="10.0.0.1", dst="224.0.0.1") / UDP() / b"m"),
        bytes(IP(src="0.0.0.0", dst="10.0.0.2") / UDP() / b"m"),
        bytes(IP(src="10.0.0.1", dst="10.0.0.2", frag=100) / (b"f" * 20)),
        bytes(IPv6(src="fe80::1", dst="fd00::2") / UDP() / b"l"),
        bytes(IPv6(src="fd00::1", dst="ff02::1") / UDP() / b"m"),
        b"\x45" + bytes(10),
    ],
)
def test_no_icmp_error_where_the_kernel_sends_none(packet: bytes) -> None:
    assert not wants_error(packet)
    assert unreachable(packet, bytes(4 if packet[0] >> 4 == 4 else 16)) is None


def test_error_rate_limit() -> None:
    limit = ErrorRateLimit()
    remote = bytes([10, 0, 0, 1])
    # Per remote destination: a burst of 6, then one a second.
    assert [limit.allow(remote, False, 0.0) for _ in range(8)] == [True] * 6 + [False] * 2
    assert limit.allow(remote, False, 1.0) and not limit.allow(remote, False, 1.0)
    # To the host itself: only the host-wide bucket (burst 50, 1000/s).
    local = bytes([10, 0, 0, 2])
    allowed = sum(limit.allow(local, True, 2.0) for _ in range(100))
    assert allowed == 50
    assert limit.allow(local, True, 2.01)  # 10 ms later: 10 more tokens
