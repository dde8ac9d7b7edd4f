"""Property tests: hostile datagrams never raise and never change a device's state.

A device with an established session (and a second handshake in progress) is fed random bytes
and mutated copies of captured valid datagrams: bit flips, byte changes, truncation,
extension, type and reserved-byte changes. receive_datagram must never raise, messages.parse
must raise nothing but ProtocolError, and only a datagram that authenticates (the unmodified
original; for a handshake message, one that differs from it only in mac2, which is checked
only under load) may change the peer state: endpoints, keypairs and their counters and replay
windows, handshake state, byte counters, cookies and timers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import hostile_bytes, may_authenticate, mutated, snapshot
from tests.pairs import (
    A_ADDR,
    A_TUN4,
    A_TUN6,
    B_ADDR,
    B_TUN4,
    B_TUN6,
    Node,
    SendDatagram,
    det_bytes,
    established_pair,
    ipv4_packet,
    ipv6_packet,
    make_node,
)
from wgref import messages
from wgref.device import padded_length
from wgref.errors import ProtocolError
from wgref.peer import Address
from wgref.results import Batch

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STRANGER: Address = ("203.0.113.200", 9999)
SOURCES = st.sampled_from([STRANGER, A_ADDR, B_ADDR, ("2001:db8::5", 1), ("fe80::1%eth0", 65535)])

# --------------------------------------------------------------------------- the scenario


def _datagrams(actions: list[Any] | Batch) -> list[bytes]:
    if isinstance(actions, Batch):
        return [data for _, data in actions.datagrams()]
    return [x.data for x in actions if isinstance(x, SendDatagram)]


@dataclasses.dataclass
class Target:
    node: Node
    original: bytes
    source: Address


class Scenario:
    """An established A-B session plus a second handshake in flight, and captured datagrams
    that are each still valid for their receiver:

    * ``initiation``: a fresh initiation from A's key (newer timestamp) that B has not seen,
    * ``response``: B's response to A's initiation in flight, not yet delivered to A,
    * ``cookie``: a cookie reply from B bound to that initiation's mac1,
    * ``transport_ab`` / ``transport_ba``: data on the session, not yet delivered.
    """

    def __init__(self, *, loaded: bool = False) -> None:
        pair = established_pair(seed=31)
        a, b = pair.a, pair.b
        self.pair = pair
        a.send(ipv4_packet(A_TUN4, B_TUN4, b"a" * 100), pair.now)
        (self.transport_ab,) = a.take_outbox()
        b.send(ipv6_packet(B_TUN6, A_TUN6, b"b" * 33), pair.now)
        (self.transport_ba,) = b.take_outbox()
        pair.advance(10.0)
        (init2,) = _datagrams(a.device.initiate_handshake(pair.peer_ab, pair.now, force=True))
        (resp2,) = _datagrams(b.device.receive_datagram(init2, A_ADDR, pair.now))
        self.response = resp2
        checker = b.device.cookie_checker
        assert checker is not None
        self.cookie = checker.make_reply(init2, B_ADDR, pair.now).to_bytes()
        # A twin of A (same static key, clock 100 s ahead) makes an initiation B has not seen.
        twin = make_node(
            "A", 63, random_bytes=det_bytes("twin"), epoch_offset=pair.a.device.epoch_offset + 100
        )
        assert twin.public_key == a.public_key
        twin_peer = twin.device.add_peer(b.public_key, endpoint=B_ADDR)
        pair.advance(1.0)
        (self.initiation,) = _datagrams(twin.device.initiate_handshake(twin_peer, pair.now))
        if loaded:
            b.device.load.threshold = 1  # every handshake message finds B under load
        self.now = pair.now

    def target(self, name: str) -> Target:
        a, b = self.pair.a, self.pair.b
        return {
            "initiation": Target(b, self.initiation, A_ADDR),
            "response": Target(a, self.response, B_ADDR),
            "cookie": Target(a, self.cookie, B_ADDR),
            "transport_ab": Target(b, self.transport_ab, A_ADDR),
            "transport_ba": Target(a, self.transport_ba, B_ADDR),
        }[name]


TARGETS = ["initiation", "response", "cookie", "transport_ab", "transport_ba"]
_scenarios: dict[bool, Scenario] = {}


def scenario(loaded: bool = False) -> Scenario:
    if loaded not in _scenarios:
        _scenarios[loaded] = Scenario(loaded=loaded)
    return _scenarios[loaded]


# --------------------------------------------------------------------------- mutations


# --------------------------------------------------------------------------- properties


@settings(SETTINGS, max_examples=400)
@given(target=st.sampled_from(TARGETS), data=st.data(), source=SOURCES, loaded=st.booleans())
def test_mutated_datagrams_never_raise_nor_change_state(
    target: str, data: st.DataObject, source: Address, loaded: bool
) -> None:
    sc = scenario(loaded)
    t = sc.target(target)
    datagram = data.draw(mutated(t.original), label="datagram")
    before = snapshot(t.node.device)
    delivered = len(t.node.delivered)
    t.node.receive(datagram, source, sc.now)  # must not raise
    if may_authenticate(t.original, datagram):
        _scenarios.pop(loaded, None)  # it may have changed the state: start afresh next time
        return
    assert snapshot(t.node.device) == before
    assert len(t.node.delivered) == delivered
    # Only cookie replies (to the source, no peer) may be sent in answer to a bad datagram.
    for out in t.node.take_outbox():
        assert messages.message_type(out) == messages.MESSAGE_COOKIE_REPLY


@SETTINGS
@given(datagram=hostile_bytes(), source=SOURCES, to_b=st.booleans())
def test_random_datagrams_never_raise_nor_change_state(
    datagram: bytes, source: Address, to_b: bool
) -> None:
    sc = scenario()
    node = sc.pair.b if to_b else sc.pair.a
    before = snapshot(node.device)
    delivered = len(node.delivered)
    node.receive(datagram, source, sc.now)
    assert snapshot(node.device) == before
    assert len(node.delivered) == delivered
    node.take_outbox()


@SETTINGS
@given(data=st.data(), index=st.sampled_from(list(range(5))))
def test_transport_with_a_live_index_and_random_body(data: st.DataObject, index: int) -> None:
    # Garbage addressed to one of the device's real receiving indices: decryption is tried.
    sc = scenario()
    node = sc.pair.b if index % 2 else sc.pair.a
    live = sorted(node.device._indices)
    receiver = live[index % len(live)]
    counter = data.draw(st.integers(0, (1 << 64) - 1))
    body = data.draw(st.binary(min_size=16, max_size=200))
    datagram = messages.transport_header(receiver, counter) + body
    before = snapshot(node.device)
    node.receive(datagram, STRANGER, sc.now)
    assert snapshot(node.device) == before


CAPTURED: list[Callable[[Scenario], bytes]] = [
    lambda s: s.initiation,
    lambda s: s.response,
    lambda s: s.cookie,
    lambda s: s.transport_ab,
    lambda s: s.transport_ba,
]


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=300), hostile_bytes()))
def test_parse_raises_only_protocol_error(raw: bytes) -> None:
    try:
        message = messages.parse(raw)
    except ProtocolError as exc:
        assert exc.reason in {"too-short", "bad-size", "bad-type", "bad-reserved"}
        return
    assert message.to_bytes() == raw  # whatever parses, round-trips exactly


@SETTINGS
@given(which=st.integers(0, len(CAPTURED) - 1), data=st.data())
def test_parse_of_mutated_messages(which: int, data: st.DataObject) -> None:
    original = CAPTURED[which](scenario())
    raw = data.draw(mutated(original))
    try:
        message = messages.parse(raw)
    except ProtocolError:
        return
    assert message.to_bytes() == raw


def test_originals_do_change_state() -> None:
    # The captured datagrams are live: delivered unmodified, each changes its receiver's state
    # (so the properties above are not vacuous).
    for name in TARGETS:
        sc = Scenario()
        t = sc.target(name)
        before = snapshot(t.node.device)
        t.node.receive(t.original, t.source, sc.now)
        assert snapshot(t.node.device) != before, name
        assert sum(t.node.device.dropped.values()) == 0, (name, t.node.device.dropped)


def test_loaded_responder_answers_fresh_initiation_with_cookie() -> None:
    sc = Scenario(loaded=True)
    t = sc.target("initiation")
    before = snapshot(t.node.device)
    (reply,) = t.node.receive(t.original, t.source, sc.now)
    assert isinstance(reply, SendDatagram) and reply.data[0] == messages.MESSAGE_COOKIE_REPLY
    assert snapshot(t.node.device) == before


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=1600),
    v6=st.booleans(),
    mtu=st.sampled_from([1280, 1420, 1500, 9000]),
)
def test_any_packet_round_trips_with_padding(payload: bytes, v6: bool, mtu: int) -> None:
    sc = scenario()
    a, b = sc.pair.a, sc.pair.b
    a.device.mtu = mtu
    try:
        packet = (
            ipv6_packet(A_TUN6, B_TUN6, payload) if v6 else ipv4_packet(A_TUN4, B_TUN4, payload)
        )
        (data,) = _datagrams(a.device.send_packet(packet, sc.now))
        assert len(data) == 16 + padded_length(len(packet), mtu) + 16
        assert b.device.receive_datagram(data, A_ADDR, sc.now).packets == [packet]
    finally:
        a.device.mtu = 1420
        _scenarios.pop(False, None)  # the session state moved on


def test_allowed_ips_of_the_scenario() -> None:
    sc = scenario()
    assert sc.pair.b.device.allowed_ips.lookup(ipaddress.ip_address(A_TUN4)) is sc.pair.peer_ba
