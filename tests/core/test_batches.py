"""The batch API of Device (wgref/results.py): a batch gives what its items give one by one, in
order; runs of datagrams to one endpoint stay together (one UDP_SEGMENT send); bad items in a
batch are dropped with an event and do not stop the rest."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pairs import (
    A_ADDR,
    A_TUN4,
    A_TUN6,
    B_TUN4,
    B_TUN6,
    established_pair,
    ipv4_packet,
    ipv6_packet,
    make_node,
)
from wgref.results import Batch, Dropped, DropReason, Endpoint

V4 = ipv4_packet(A_TUN4, B_TUN4, bytes(1400))
V6 = ipv6_packet(A_TUN6, B_TUN6, bytes(100))
CAROL_NET = ipaddress.ip_network("10.0.0.3/32")


def test_tso_segments_go_out_as_one_run() -> None:
    pair = established_pair()
    out = Batch()
    pair.a.device.send_packets([V4] * 40, pair.now, out)
    ((destination, run),) = out.sends
    assert destination == Endpoint("198.51.100.2", 51821) and len(run) == 40
    counters = [int.from_bytes(d[8:16], "little") for d in run]
    assert counters == list(range(counters[0], counters[0] + 40))


def test_runs_per_destination_and_drops_in_between() -> None:
    pair = established_pair()
    carol = make_node("C", 77)
    a = pair.a.device
    a.add_peer(carol.public_key, endpoint=("203.0.113.3", 3), allowed_ips=[CAROL_NET])
    to_carol = ipv4_packet(A_TUN4, "10.0.0.3", b"c")
    no_route = ipv4_packet(A_TUN4, "10.9.9.9", b"?")
    out = Batch()
    a.send_packets([V4, V4, b"\x00junk", V6, no_route, to_carol, V4], pair.now, out)
    assert [(d.host, len(run)) for d, run in out.sends] == [
        ("198.51.100.2", 3),  # V4, V4 and V6: one peer, one run across the drops
        ("203.0.113.3", 1),  # carol has no session: her packet starts a handshake
        ("198.51.100.2", 1),
    ]
    drops = [e.reason for e in out.events if isinstance(e, Dropped)]
    assert drops == [DropReason.BAD_OUTBOUND_PACKET, DropReason.NO_ROUTE]


def test_receive_batch_keeps_order_and_survives_bad_items() -> None:
    pair = established_pair()
    packets = [ipv4_packet(A_TUN4, B_TUN4, bytes([i]) * (i + 1)) for i in range(10)]
    out = Batch()
    pair.a.device.send_packets(packets, pair.now, out)
    sealed = [d for _, d in out.datagrams()]
    junk = [b"", b"\x04", b"\x09" + bytes(79), sealed[3]]  # the last one: a replay
    mixed = sealed[:5] + junk + sealed[5:]
    received = Batch()
    pair.b.device.receive_datagrams(mixed, [Endpoint(*A_ADDR)] * len(mixed), pair.now, received)
    assert received.packets == packets
    drops = [e.reason for e in received.events if isinstance(e, Dropped)]
    assert drops == [
        DropReason.TOO_SHORT,
        DropReason.TOO_SHORT,
        DropReason.BAD_TYPE,
        DropReason.REPLAY,
    ]


@settings(max_examples=40, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["v4", "v6", "big", "empty-ip", "junk", "noroute"]), max_size=30)
)
def test_a_batch_is_its_items_one_by_one(kinds: list[str]) -> None:
    """send_packets(items) leaves the same datagrams, events and state as send_packet per
    item (the same seed for both devices: byte-for-byte)."""
    make = {
        "v4": V4,
        "v6": V6,
        "big": ipv4_packet(A_TUN4, B_TUN4, bytes(3000)),
        "empty-ip": ipv4_packet(A_TUN4, B_TUN4),
        "junk": b"\x45",
        "noroute": ipv4_packet(A_TUN4, "10.7.7.7"),
    }
    packets = [make[k] for k in kinds]
    one, many = established_pair(seed=5), established_pair(seed=5)
    singles = [one.a.device.send_packet(p, one.now) for p in packets]
    batch = Batch()
    many.a.device.send_packets(packets, many.now, batch)
    assert [d for b in singles for d in b.datagrams()] == batch.datagrams()
    assert [type(e) for b in singles for e in b.events] == [type(e) for e in batch.events]
    assert one.peer_ab.tx_bytes == many.peer_ab.tx_bytes
    received_one = [one.b.device.receive_datagram(d, A_ADDR, one.now) for _, d in batch.datagrams()]
    received_many = Batch()
    data = [d for _, d in batch.datagrams()]
    many.b.device.receive_datagrams(data, [Endpoint(*A_ADDR)] * len(data), many.now, received_many)
    assert [p for b in received_one for p in b.packets] == received_many.packets
    assert one.peer_ba.rx_bytes == many.peer_ba.rx_bytes


def test_endpoint_remembers_the_local_source_until_cleared() -> None:
    """The core stores the source of each authenticated datagram, local address and
    interface included (socket.c: struct endpoint keeps src4/src6 and src_if4); replies
    leave from it until clear_endpoint_source (wg_socket_clear_peer_endpoint_src)."""
    pair = established_pair()
    b, peer = pair.b.device, pair.peer_ba
    sticky = Endpoint("192.0.2.1", 51820, "198.51.100.2", 7)
    pair.a.send(V4, pair.now)
    (data,) = pair.a.take_outbox()
    b.receive_datagram(data, sticky, pair.now)
    assert peer.endpoint == sticky
    out = b.send_packet(ipv4_packet(B_TUN4, A_TUN4, b"reply"), pair.now)
    assert [dest for dest, _ in out.datagrams()] == [sticky]
    b.clear_endpoint_source(peer)
    assert peer.endpoint == Endpoint("192.0.2.1", 51820)
    out = Batch()
    b.set_endpoint(peer, Endpoint("203.0.113.8", 9, "10.9.9.9", 3), pair.now, out)
    assert peer.endpoint == Endpoint("203.0.113.8", 9)  # configured: routing picks the source
    assert not out  # nothing was staged


def test_retransmission_forgets_the_local_source() -> None:
    """timers.c wg_expired_retransmit_handshake clears the endpoint's source: the remembered
    local address may be why the handshake gets no answer."""
    pair = established_pair()
    a, peer = pair.a.device, pair.peer_ab
    peer.endpoint = Endpoint("198.51.100.2", 51821, "192.0.2.1", 2)
    a.initiate_handshake(peer, pair.now, force=True)
    assert peer.endpoint.local == "192.0.2.1"
    out = a.handle_timer(pair.now + 5 + 0.34)  # REKEY_TIMEOUT + the jitter's maximum
    assert [dest for dest, _ in out.datagrams()] == [Endpoint("198.51.100.2", 51821)]
