"""Protocol tests of wgref.device.Device: two in-memory devices under a fake clock.

Timers and limits are those of WP 6 and the kernel (drivers/net/wireguard/timers.c, send.c,
receive.c, noise.c); see wgref/constants.py.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct

import pytest

from tests.pairs import (
    A_ADDR,
    A_TUN4,
    A_TUN6,
    B_ADDR,
    B_TUN4,
    B_TUN6,
    Deliver,
    Node,
    Pair,
    SendDatagram,
    drop_all,
    established_pair,
    ipv4_packet,
    ipv6_packet,
    is_initiation,
    is_keepalive,
    is_response,
    is_transport,
    make_key,
    make_node,
    make_pair,
    roundtrip,
    transfer,
)
from wgref.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    MESSAGE_COOKIE_REPLY,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEYS_AFTER,
)
from wgref.cookie import CookieChecker, CookieMaker, mac1_key
from wgref.crypto import clamp, dh, mac, public_key
from wgref.device import Device, padded_length
from wgref.handshake import HandshakeState
from wgref.messages import transport_header, unpack_transport_header
from wgref.noise import build_initiation
from wgref.results import (
    Batch,
    Dropped,
    DropReason,
    Endpoint,
    HandshakeCompleted,
    HandshakeInitiated,
    HandshakeResponded,
)
from wgref.tai64n import tai64n

PSK = bytes(range(1, 33))
OTHER_PSK = bytes(range(2, 34))
JITTER = REKEY_TIMEOUT_JITTER_MAX
ATTACKER: tuple[str, int] = ("203.0.113.9", 4444)


def v4(payload: bytes = b"ping", src: str = A_TUN4, dst: str = B_TUN4) -> bytes:
    return ipv4_packet(src, dst, payload)


def v4_back(payload: bytes = b"pong") -> bytes:
    return ipv4_packet(B_TUN4, A_TUN4, payload)


def datagrams(node: Node, since: float = float("-inf")) -> list[bytes]:
    return [d for _, d in node.sent_data(since)]


def transports(node: Node, since: float = float("-inf")) -> list[bytes]:
    return [d for d in datagrams(node, since) if is_transport(d)]


def only_datagrams(actions: list | Batch) -> list[bytes]:
    if isinstance(actions, Batch):
        return [data for _, data in actions.datagrams()]
    return [a.data for a in actions if isinstance(a, SendDatagram)]


def delivered(node: Node) -> list[bytes]:
    return [d.packet for d in node.delivered]


def seal_transport(pair: Pair, counter: int, packet: bytes, *, from_a: bool = True) -> bytes:
    """A transport message on the sender's current keypair with an arbitrary counter."""
    peer = pair.peer_ab if from_a else pair.peer_ba
    keypair = peer.keypairs.current
    assert keypair is not None
    nonce = struct.pack("<4xQ", counter)
    return transport_header(keypair.remote_index, counter) + keypair.sender.encrypt(
        nonce, packet, None
    )


# --------------------------------------------------------------------------- handshake and data


@pytest.mark.parametrize("psk", [None, PSK], ids=["no-psk", "psk"])
def test_handshake_and_data_both_ways(psk: bytes | None) -> None:
    pair = make_pair(psk_a=psk, psk_b=psk)
    first = v4(b"hello")
    actions = pair.a.send(first, pair.now)
    assert [len(d) for d in only_datagrams(actions)] == [148]  # staged behind a handshake
    pair.roundtrip()
    assert delivered(pair.b) == [first]
    # Initiator: initiation, then the staged data; responder: the response only.
    assert [len(d) for d in datagrams(pair.a)] == [148, 16 + 32 + 16]
    assert [len(d) for d in datagrams(pair.b)] == [92]
    back = ipv6_packet(B_TUN6, A_TUN6, b"over v6")
    pair.b.send(back, pair.now)
    pair.roundtrip()
    assert delivered(pair.a) == [back]
    more_v6 = ipv6_packet(A_TUN6, B_TUN6, b"x" * 300)
    more_v4 = ipv4_packet(B_TUN4, A_TUN4, b"y" * 1000)
    pair.a.send(more_v6, pair.now)
    pair.b.send(more_v4, pair.now)
    pair.roundtrip()
    assert delivered(pair.b) == [first, more_v6]
    assert delivered(pair.a) == [back, more_v4]
    assert not pair.a.device.dropped and not pair.b.device.dropped
    assert pair.peer_ab.keypairs.current is not None and pair.peer_ab.keypairs.current.is_initiator
    assert pair.peer_ba.keypairs.current is not None
    assert not pair.peer_ba.keypairs.current.is_initiator
    assert pair.peer_ab.last_handshake is not None and pair.peer_ba.last_handshake is not None


def test_many_packets_in_both_directions_keep_order() -> None:
    pair = established_pair(seed=3)
    sent_ab = [v4(bytes([i]) * i) for i in range(40)]
    sent_ba = [ipv6_packet(B_TUN6, A_TUN6, bytes([i]) * (i * 7)) for i in range(40)]
    for p, q in zip(sent_ab, sent_ba, strict=True):
        pair.a.send(p, pair.now)
        pair.b.send(q, pair.now)
        pair.advance(0.01)
    pair.roundtrip()
    assert delivered(pair.b) == sent_ab
    assert delivered(pair.a) == sent_ba


def test_mismatched_psk_never_completes() -> None:
    pair = make_pair(psk_a=PSK, psk_b=OTHER_PSK)
    start = pair.now
    for i in range(60):  # both sides try to talk for two minutes
        pair.a.send(v4(b"a%d" % i), pair.now)
        pair.b.send(v4_back(b"b%d" % i), pair.now)
        pair.run(start + 2.0 * (i + 1))
    assert pair.a.delivered == [] and pair.b.delivered == []
    responses_from_b = [d for d in datagrams(pair.b) if is_response(d)]
    responses_from_a = [d for d in datagrams(pair.a) if is_response(d)]
    assert responses_from_b and responses_from_a
    # Every response is dropped by the initiator: it fails to authenticate, or (when the two
    # sides' initiations crossed) answers an initiation that was abandoned. No data is sent.
    for node, responses in ((pair.a, responses_from_b), (pair.b, responses_from_a)):
        assert sum(node.device.dropped.values()) == len(responses)
        assert node.device.dropped["decrypt-failed"] >= len(responses) - 2
    assert transports(pair.a) == [] and transports(pair.b) == []
    assert pair.peer_ab.keypairs.current is None and pair.peer_ba.keypairs.current is None
    assert pair.peer_ab.last_handshake is None and pair.peer_ba.last_handshake is None


def test_no_route_and_bad_outbound_packet() -> None:
    pair = established_pair()
    assert pair.a.send(v4(dst="10.9.9.9"), pair.now) == []
    assert pair.a.device.dropped["no-route"] == 1
    assert pair.a.send(b"", pair.now) == []
    assert pair.a.send(b"\x45" + bytes(5), pair.now) == []
    assert pair.a.device.dropped["bad-outbound-packet"] == 2


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    ("mtu", "length", "padded"),
    [
        (1420, 20, 32),
        (1420, 21, 32),
        (1420, 32, 32),
        (1420, 33, 48),
        (1420, 1404, 1408),
        (1420, 1405, 1408),
        (1420, 1409, 1420),
        (1420, 1417, 1420),  # min(MTU, 1424)
        (1420, 1420, 1420),  # a full-MTU packet is not padded
        (1420, 1421, 1436),  # longer than the MTU: padded as 1421 % 1420 = 1
        (1420, 1430, 1436),
        (1420, 1500, 1500),  # 1500 % 1420 = 80, already a multiple of 16
        (1420, 2840, 2840),
        (100, 90, 96),
        (100, 97, 100),
        (100, 100, 100),
        (100, 101, 116),
    ],
)
def test_padding_on_the_wire(mtu: int, length: int, padded: int) -> None:
    # WP 5.4.6 and kernel send.c calculate_skb_padding: a multiple of 16 capped at the MTU;
    # a packet longer than the MTU is padded as if it were length % MTU long.
    pair = established_pair(a_kwargs={"mtu": mtu})
    packet = v4(b"\xab" * (length - 20))
    assert len(packet) == length
    actions = pair.a.send(packet, pair.now)
    (data,) = only_datagrams(actions)
    assert len(data) == 16 + padded + 16
    assert padded_length(length, mtu) == padded
    pair.roundtrip()
    assert delivered(pair.b) == [packet]  # padding removed by the IP length


def test_padding_function() -> None:
    assert padded_length(0, 1420) == 0  # a keepalive is not padded
    assert padded_length(1, 1420) == 16
    assert padded_length(1420, 1420) == 1420
    assert padded_length(1419, 1420) == 1420
    assert padded_length(1405, 1420) == 1408
    assert padded_length(17, 0) == 32  # no MTU known: plain multiple of 16


def test_keepalive_is_32_bytes() -> None:
    pair = established_pair()
    (data,) = only_datagrams(pair.a.absorb(pair.a.device.send_keepalive(pair.peer_ab, 5.0), 5.0))
    assert len(data) == 32


# --------------------------------------------------------------------------- rekey


def test_rekey_after_time_by_initiator_only() -> None:
    pair = established_pair()
    created = pair.peer_ab.keypairs.current.created
    pair.now = created + REKEY_AFTER_TIME - 1
    lengths = [len(d) for d in only_datagrams(pair.a.send(v4(), pair.now))]
    assert lengths == [64]
    pair.roundtrip()
    pair.now = created + REKEY_AFTER_TIME + 1
    # The responder keeps sending on its session: it never rekeys on time (WP 6.2).
    assert [is_initiation(d) for d in only_datagrams(pair.b.send(v4_back(), pair.now))] == [False]
    transfer(pair.b, pair.a, pair.now)
    assert pair.peer_ba.handshake.state is HandshakeState.ZEROED
    # The initiator sends the packet on the old session and starts a handshake.
    out = only_datagrams(pair.a.send(v4(), pair.now))
    assert [is_transport(out[0]), is_initiation(out[1])] == [True, True]
    assert len(out) == 2


def test_initiator_rekeys_when_receiving_on_an_old_session() -> None:
    # WP 6.2: REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT after the handshake, the
    # initiator rekeys on receiving; the responder does not.
    pair = established_pair()
    created = pair.peer_ab.keypairs.current.created
    pair.now = created + REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT + 1
    pair.b.send(v4_back(), pair.now)
    assert only_datagrams(pair.b.outbox) and not any(is_initiation(d) for d in datagrams(pair.b))
    transfer(pair.b, pair.a, pair.now)
    assert len(pair.a.delivered) == 1
    assert any(is_initiation(d) for d in datagrams(pair.a, since=pair.now))


def test_previous_keypair_still_accepted_after_rekey() -> None:
    pair = established_pair()
    old_a = pair.peer_ab.keypairs.current
    old_b = pair.peer_ba.keypairs.current
    pair.now += REKEY_AFTER_TIME + 1
    late_ab = v4(b"old session a->b")
    late_ba = v4_back(b"old session b->a")
    pair.a.send(late_ab, pair.now)
    pair.b.send(late_ba, pair.now)
    (held_ab, initiation) = pair.a.take_outbox()
    (held_ba,) = pair.b.take_outbox()
    assert is_transport(held_ab) and is_initiation(initiation)
    # The new handshake completes (initiation, response, confirming keepalive)...
    pair.b.receive(initiation, A_ADDR, pair.now)
    pair.roundtrip()
    assert pair.peer_ab.keypairs.current is not old_a
    assert pair.peer_ab.keypairs.previous is old_a
    assert pair.peer_ba.keypairs.current is not old_b
    assert pair.peer_ba.keypairs.previous is old_b
    # ...and the packets still in flight on the old session are delivered.
    pair.b.receive(held_ab, A_ADDR, pair.now)
    pair.a.receive(held_ba, B_ADDR, pair.now)
    assert delivered(pair.b) == [late_ab]
    assert delivered(pair.a) == [late_ba]
    # New traffic uses the new session.
    pair.a.send(v4(b"new"), pair.now)
    (new,) = pair.a.take_outbox()
    assert unpack_transport_header(new)[0] == pair.peer_ab.keypairs.current.remote_index


# --------------------------------------------------------------------------- retransmission


@pytest.mark.parametrize("seed", range(4))
def test_retransmit_interval_with_lost_response(seed: int) -> None:
    pair = make_pair(seed=seed)
    start = pair.now
    pair.a.send(v4(), pair.now)
    pair.run(start + 40.0, drop_ba=is_response)
    times = pair.a.initiation_times()
    assert len(times) >= 7
    assert times[0] == start
    for before, after in itertools.pairwise(times):
        assert REKEY_TIMEOUT <= after - before < REKEY_TIMEOUT + JITTER
    # The responder answered every initiation (with a new ephemeral each time).
    responses = [d for d in datagrams(pair.b) if is_response(d)]
    assert len(responses) == len(times)
    assert len(set(responses)) == len(responses)
    # Once a response gets through, the handshake completes and the data is delivered.
    pair.run(pair.now + 10.0)
    assert delivered(pair.b) == [v4()]


@pytest.mark.parametrize("seed", range(3))
def test_handshake_gives_up_after_rekey_attempt_time(seed: int) -> None:
    pair = make_pair(seed=seed)
    start = pair.now
    pair.a.send(v4(), pair.now)
    pair.run(start + 300.0, drop_ab=drop_all)
    times = [t - start for t in pair.a.initiation_times()]
    # Kernel timers.c: retries while attempts <= MAX_TIMER_HANDSHAKES, then "did not complete
    # after MAX_TIMER_HANDSHAKES + 2 attempts, giving up" -- about REKEY_ATTEMPT_TIME worth.
    assert len(times) == MAX_TIMER_HANDSHAKES + 2
    assert times[0] == 0.0
    for before, after in itertools.pairwise(times):
        assert REKEY_TIMEOUT <= after - before < REKEY_TIMEOUT + JITTER  # at most 1 per 5 s
    retries = len(times) - 1
    assert times[-1] < retries * (REKEY_TIMEOUT + JITTER)  # none after ~95 s + jitter
    peer = pair.peer_ab
    assert peer.timers.retransmit_handshake is None
    assert not peer.staged  # the queued packet is dropped on giving up
    # timers.c wg_expired_retransmit_handshake keeps the handshake (a late response still
    # completes it); only zero_key_material erases it.
    assert peer.handshake.state is HandshakeState.CREATED_INITIATION
    assert peer.timers.zero_key_material is not None
    # A new packet starts over.
    pair.now += 1.0
    assert [is_initiation(d) for d in only_datagrams(pair.a.send(v4(), pair.now))] == [True]


def test_user_traffic_while_handshaking_is_rate_limited() -> None:
    pair = make_pair()
    start = pair.now
    for i in range(100):  # a packet every 100 ms for 10 s, B unreachable
        pair.now = start + 0.1 * i
        pair.a.send(v4(), pair.now)
        pair.a.timer(pair.now)
    times = pair.a.initiation_times()
    assert len(times) in (2, 3)
    for before, after in itertools.pairwise(times):
        assert after - before >= REKEY_TIMEOUT


# --------------------------------------------------------------------------- keepalives


def test_passive_keepalive_after_receiving_data() -> None:
    pair = established_pair()
    start = pair.now
    pair.a.send(v4(), pair.now)
    pair.roundtrip()
    assert len(pair.b.delivered) == 1
    pair.run(start + KEEPALIVE_TIMEOUT - 0.01)
    assert datagrams(pair.b, since=start) == []
    pair.run(start + KEEPALIVE_TIMEOUT)
    (keepalive,) = datagrams(pair.b, since=start)
    assert is_keepalive(keepalive)
    assert pair.b.sent[-1][0] == pytest.approx(start + KEEPALIVE_TIMEOUT)
    # A keepalive is not data: the other side does not answer it, and A's new-handshake
    # timer (armed by its data) was cancelled by it.
    pair.run(start + 100.0)
    assert datagrams(pair.b, since=start) == [keepalive]
    assert datagrams(pair.a, since=start + 1) == []


def test_no_passive_keepalive_when_replying_with_data() -> None:
    pair = established_pair()
    start = pair.now
    pair.a.send(v4(), pair.now)
    pair.roundtrip()
    pair.now += 3.0
    pair.b.send(v4_back(), pair.now)
    pair.roundtrip()
    pair.run(start + 60.0)
    assert [len(d) for d in datagrams(pair.b, since=start)] == [64]
    # A received data and had nothing to send: A sends the passive keepalive.
    assert [is_keepalive(d) for d in datagrams(pair.a, since=start + 1)] == [True]


def test_new_handshake_when_data_gets_no_reply() -> None:
    pair = established_pair()
    start = pair.now
    for dt in (0.0, 4.0, 8.0, 12.0):  # keeps sending; the timer runs from the first packet
        pair.now = start + dt
        pair.a.send(v4(), pair.now)
    pair.run(start + 30.0, drop_ba=drop_all)  # B's keepalives and responses are lost
    initiations_after = [t for t in pair.a.initiation_times() if t >= start]
    first = initiations_after[0]
    assert first - start >= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    assert first - start < KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JITTER


def test_persistent_keepalive() -> None:
    pair = make_pair(keepalive_a=25)
    pair.handshake()
    start = pair.now
    pair.run(start + 110.0)
    times = [t - start for t, d in pair.a.sent_data(since=start + 0.001)]
    assert times == [25.0, 50.0, 75.0, 100.0]
    assert all(is_keepalive(d) for _, d in pair.a.sent_data(since=start + 0.001))
    assert datagrams(pair.b, since=start + 0.001) == []  # B has no persistent keepalive


def test_persistent_keepalive_counts_from_the_last_packet() -> None:
    pair = make_pair(keepalive_a=25)
    pair.handshake()
    start = pair.now
    pair.now = start + 20.0
    pair.b.send(v4_back(), pair.now)  # an authenticated packet received resets the interval
    pair.roundtrip()
    pair.run(start + 60.0)
    keepalive_times = [t - start for t, d in pair.a.sent_data(since=start + 0.001)]
    # A passive keepalive 10 s after the data (an authenticated packet sent), then the
    # persistent keepalive 25 s after that one, not 25 s after the handshake.
    assert keepalive_times == [30.0, 55.0]


def test_initiator_confirms_with_keepalive() -> None:
    pair = make_pair()
    actions = pair.a.device.initiate_handshake(pair.peer_ab, pair.now)
    (initiation,) = only_datagrams(pair.a.absorb(actions, pair.now))
    assert is_initiation(initiation)
    pair.a.take_outbox()
    (response,) = only_datagrams(pair.b.receive(initiation, A_ADDR, pair.now))
    actions = pair.a.receive(response, B_ADDR, pair.now)
    (confirm,) = only_datagrams(actions)
    assert is_keepalive(confirm)  # right after the response, nothing staged
    assert pair.peer_ba.keypairs.current is None and pair.peer_ba.keypairs.next is not None
    pair.b.receive(confirm, A_ADDR, pair.now)
    assert pair.peer_ba.keypairs.current is not None and pair.peer_ba.keypairs.next is None
    assert pair.b.delivered == []


def test_initiator_confirms_with_staged_data() -> None:
    pair = make_pair()
    packets = [v4(b"one"), v4(b"two")]
    for p in packets:
        pair.a.send(p, pair.now)
    (initiation,) = pair.a.take_outbox()
    (response,) = only_datagrams(pair.b.receive(initiation, A_ADDR, pair.now))
    out = only_datagrams(pair.a.receive(response, B_ADDR, pair.now))
    assert len(out) == 2 and not any(is_keepalive(d) for d in out)


def test_responder_stages_packets_until_confirmed() -> None:
    pair = make_pair()
    pair.a.absorb(pair.a.device.initiate_handshake(pair.peer_ab, pair.now), pair.now)
    (initiation,) = pair.a.take_outbox()
    (response,) = only_datagrams(pair.b.receive(initiation, A_ADDR, pair.now))
    pair.b.take_outbox()
    pair.now += 0.5
    reply = v4_back(b"too early")
    # The responder must not use the new session before the initiator does (WP 5.4.5), and
    # must not start a handshake of its own while the initiator confirms.
    assert pair.b.send(reply, pair.now) == []
    assert list(pair.peer_ba.staged) == [reply]
    (confirm,) = only_datagrams(pair.a.receive(response, B_ADDR, pair.now))
    flushed = only_datagrams(pair.b.receive(confirm, A_ADDR, pair.now))
    assert len(flushed) == 1 and is_transport(flushed[0])
    transfer(pair.b, pair.a, pair.now)
    assert delivered(pair.a) == [reply]


# --------------------------------------------------------------------------- expiry


def test_all_keys_zeroed_after_540_seconds() -> None:
    pair = established_pair()
    start = pair.peer_ab.keypairs.current.created
    # A keepalive, kept to be delivered late (data would arm A's new-handshake timer).
    pair.a.absorb(pair.a.device.send_keepalive(pair.peer_ab, pair.now), pair.now)
    (old_transport,) = pair.a.take_outbox()
    pair.run(start + ZERO_KEYS_AFTER - 0.5)
    assert pair.peer_ab.keypairs.current is not None
    assert pair.peer_ba.keypairs.current is not None
    pair.run(start + ZERO_KEYS_AFTER)
    for peer, device in ((pair.peer_ab, pair.a.device), (pair.peer_ba, pair.b.device)):
        assert peer.keypairs.all() == []
        assert peer.handshake.state is HandshakeState.ZEROED
        assert not device._indices  # no index left to receive on
    pair.b.receive(old_transport, A_ADDR, pair.now)
    assert pair.b.device.dropped["unknown-index"] == 1
    # The next packet starts a handshake.
    out = only_datagrams(pair.a.send(v4(), pair.now))
    assert [is_initiation(d) for d in out] == [True]


def test_session_not_used_after_reject_after_time() -> None:
    pair = established_pair()
    start = pair.peer_ab.keypairs.current.created
    pair.now = start + REJECT_AFTER_TIME + 1
    out = only_datagrams(pair.b.send(v4_back(), pair.now))  # the responder, no rekey on time
    assert [is_initiation(d) for d in out] == [True]
    pair.b.take_outbox()
    late = seal_transport(pair, 5, v4(), from_a=True)
    pair.b.receive(late, A_ADDR, pair.now)
    assert pair.b.delivered == []
    assert pair.b.device.dropped["expired-keypair"] == 1


def test_set_private_key_expires_sessions() -> None:
    pair = established_pair()
    pair.now += 1
    pair.a.device.set_private_key(pair.a.device.private_key)  # the same key: nothing changes
    assert [is_transport(d) for d in only_datagrams(pair.a.send(v4(), pair.now))] == [True]
    pair.a.device.set_private_key(make_key(99))
    out = only_datagrams(pair.a.send(v4(), pair.now))
    assert [is_initiation(d) for d in out] == [True]
    assert pair.peer_ab.keypairs.current is not None  # kept for receiving, not for sending
    assert not pair.peer_ab.keypairs.current.can_send(pair.now)


def test_set_private_key_on_responder() -> None:
    pair = established_pair()
    pair.now += 1
    pair.b.device.set_private_key(make_key(98))
    out = only_datagrams(pair.b.send(v4_back(), pair.now))
    assert [is_initiation(d) for d in out] == [True]


# --------------------------------------------------------------------------- DoS defences


def bogus_initiation(responder_public: bytes, rng: random.Random) -> bytes:
    """An initiation with a valid mac1 but random content (anyone can compute mac1)."""
    body = b"\x01\x00\x00\x00" + rng.randbytes(112)
    return body + mac(mac1_key(responder_public), body) + bytes(16)


@pytest.mark.parametrize(
    ("a_addr", "b_addr"),
    [(A_ADDR, B_ADDR), (("2001:db8::1", 51820), ("2001:db8:1::2", 443))],
    ids=["ipv4", "ipv6"],
)
def test_cookie_reply_under_load(a_addr: tuple[str, int], b_addr: tuple[str, int]) -> None:
    pair = make_pair(b_kwargs={"under_load_threshold": 4}, a_addr=a_addr, b_addr=b_addr)
    rng = random.Random(5)
    start = pair.now
    for _ in range(10):
        pair.b.receive(bogus_initiation(pair.b.public_key, rng), ATTACKER, pair.now)
    cookie_replies = [d for d in pair.b.outbox if d.destination == ATTACKER]
    assert len(cookie_replies) >= 10 - 4 + 1
    assert all(len(d.data) == 64 and d.data[0] == MESSAGE_COOKIE_REPLY for d in cookie_replies)
    pair.b.outbox.clear()
    # A's initiation arrives while B is under load: B answers with a cookie reply.
    pair.a.send(v4(), pair.now)
    (initiation,) = pair.a.take_outbox()
    assert initiation[132:] == bytes(16)  # no cookie yet: mac2 is zero
    (reply,) = only_datagrams(pair.b.receive(initiation, a_addr, pair.now))
    assert len(reply) == 64 and reply[0] == MESSAGE_COOKIE_REPLY
    assert pair.peer_ba.keypairs.next is None
    # A stores the cookie and sends nothing now (WP 6.6).
    assert pair.a.receive(reply, b_addr, pair.now) == []
    assert pair.peer_ab.cookie.cookie is not None
    # Still flooded when A's retransmission is due.
    deadline = pair.a.device.next_timer()
    assert deadline is not None and REKEY_TIMEOUT <= deadline - start < REKEY_TIMEOUT + JITTER
    pair.now = deadline - 0.01
    for _ in range(10):
        pair.b.receive(bogus_initiation(pair.b.public_key, rng), ATTACKER, pair.now)
    pair.b.outbox.clear()
    pair.now = deadline
    (retry,) = only_datagrams(pair.a.timer(pair.now))
    pair.a.take_outbox()
    assert is_initiation(retry) and retry[132:] != bytes(16)
    checker = pair.b.device.cookie_checker
    assert checker is not None and checker.check_mac2(retry, a_addr, pair.now)
    assert not checker.check_mac2(retry, (a_addr[0], a_addr[1] + 1), pair.now)  # A's port
    (response,) = only_datagrams(pair.b.receive(retry, a_addr, pair.now))
    assert is_response(response)
    pair.roundtrip()
    assert delivered(pair.b) == [v4()]


def test_cookie_reply_for_unknown_index_is_dropped() -> None:
    pair = make_pair()
    checker = CookieChecker.for_static(pair.b.public_key)
    body = CookieMaker.for_peer(pair.b.public_key).add_macs(bytes(116), 0.0)
    reply = checker.make_reply(b"\x01" + body[1:], A_ADDR, 0.0).to_bytes()
    assert pair.a.receive(reply, B_ADDR, pair.now) == []
    assert pair.a.device.dropped["unknown-index"] == 1


def test_under_load_ratelimits_per_source() -> None:
    pair = make_pair(b_kwargs={"under_load_threshold": 1})
    # Under load, even messages with a valid mac2 are limited per source address.
    checker = pair.b.device.cookie_checker
    assert checker is not None
    rng = random.Random(1)
    cookie = checker.cookie_for(ATTACKER, pair.now)
    for _ in range(20):
        body = bogus_initiation(pair.b.public_key, rng)[:132]
        pair.b.receive(body + mac(cookie, body), ATTACKER, pair.now)
    assert pair.b.device.dropped["ratelimited"] >= 10
    assert pair.b.outbox == []


def test_replayed_initiation_gets_no_response() -> None:
    pair = make_pair()
    pair.a.send(v4(), pair.now)
    (initiation,) = pair.a.take_outbox()
    assert len(only_datagrams(pair.b.receive(initiation, A_ADDR, pair.now))) == 1
    waiting = pair.peer_ba.keypairs.next
    pair.now += 1.0
    assert pair.b.receive(initiation, A_ADDR, pair.now) == []
    assert pair.b.device.dropped["replayed-initiation"] == 1
    assert pair.peer_ba.keypairs.next is waiting
    # Also after the session is established (a replay must not reset it).
    pair.roundtrip()
    current = pair.peer_ba.keypairs.current
    assert current is not None
    pair.now += 30.0
    assert pair.b.receive(initiation, ("192.0.2.77", 1), pair.now) == []
    assert pair.peer_ba.keypairs.current is current
    assert pair.peer_ba.endpoint == Endpoint(*A_ADDR)


def test_initiations_less_than_20ms_apart() -> None:
    pair = make_pair()
    peer = pair.peer_ab
    first = only_datagrams(pair.a.device.initiate_handshake(peer, pair.now))[0]
    assert len(only_datagrams(pair.b.receive(first, A_ADDR, pair.now))) == 1
    # A newer timestamp (A's clock jumps), but only 10 ms later at B.
    pair.a.device.epoch_offset += 1.0
    second = only_datagrams(pair.a.device.initiate_handshake(peer, pair.now + 0.01, force=True))
    assert pair.b.receive(second[0], A_ADDR, pair.now + 0.01) == []
    assert pair.b.device.dropped["initiation-flood"] == 1
    pair.a.device.epoch_offset += 1.0
    third = only_datagrams(pair.a.device.initiate_handshake(peer, pair.now + 0.025, force=True))
    assert len(only_datagrams(pair.b.receive(third[0], A_ADDR, pair.now + 0.025))) == 1


LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p.hex()[:8])
def test_low_order_peer_never_handshakes(point: bytes) -> None:
    node = make_node("A", 1)
    peer = node.device.add_peer(
        point, endpoint=B_ADDR, allowed_ips=[ipaddress.ip_network("10.0.0.0/24")]
    )
    assert node.send(v4(), 1.0) == []
    assert node.timer(100.0) == []
    assert not node.device.initiate_handshake(peer, 200.0, force=True).sends
    assert peer.keypairs.all() == []


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p.hex()[:8])
def test_forged_initiation_from_low_order_key_is_dropped(point: bytes) -> None:
    # With a low-order static key, DH(S_r, S_i) is all zero and known to anyone: an attacker
    # could complete the handshake, so the responder must reject it (kernel noise.c).
    responder = make_node("B", 2)
    responder.device.add_peer(point, allowed_ips=[ipaddress.ip_network("10.0.0.0/24")])
    ephemeral = clamp(random.Random(3).randbytes(32))
    message, _ = build_initiation(
        sender=7,
        local_static_public=point,
        remote_static=responder.public_key,
        static_static=bytes(32),
        ephemeral_private=ephemeral,
        timestamp=tai64n(1e9),
    )
    data = CookieMaker.for_peer(responder.public_key).add_macs(message.to_bytes()[:116], 0.0)
    assert responder.receive(data, ATTACKER, 1.0) == []
    assert responder.device.dropped["low-order-key"] == 1


def test_initiation_from_unknown_key_and_bad_mac1() -> None:
    pair = make_pair()
    stranger = make_node("A", 77)
    stranger.device.add_peer(
        pair.b.public_key, endpoint=B_ADDR, allowed_ips=[ipaddress.ip_network("10.0.0.2/32")]
    )
    (initiation,) = only_datagrams(stranger.send(v4(), pair.now))
    assert pair.b.receive(initiation, ATTACKER, pair.now) == []
    assert pair.b.device.dropped["unknown-peer"] == 1
    bad = initiation[:116] + bytes(16) + initiation[132:]
    assert pair.b.receive(bad, ATTACKER, pair.now) == []
    assert pair.b.device.dropped["bad-mac1"] == 1


def test_device_without_private_key_drops_handshakes() -> None:
    pair = make_pair()
    (initiation,) = only_datagrams(pair.a.send(v4(), pair.now))
    keyless = Device(rng=random.Random(1))
    assert not keyless.receive_datagram(initiation, A_ADDR, pair.now).sends
    assert keyless.dropped["no-private-key"] == 1


# --------------------------------------------------------------------------- message limits


def test_rekey_after_messages_on_both_sides() -> None:
    pair = established_pair()
    pair.now += 10.0
    pair.peer_ab.keypairs.current.send_counter = REKEY_AFTER_MESSAGES
    out = only_datagrams(pair.a.send(v4(), pair.now))
    assert [is_transport(out[0]), is_initiation(out[1])] == [True, True]
    assert unpack_transport_header(out[0])[1] == REKEY_AFTER_MESSAGES
    transfer(pair.a, pair.b, pair.now, drop=is_initiation)
    assert delivered(pair.b) == [v4()]
    # The responder rekeys on message count too (WP 6.2: "either side").
    pair.peer_ba.keypairs.current.send_counter = REKEY_AFTER_MESSAGES
    out = only_datagrams(pair.b.send(v4_back(), pair.now))
    assert [is_transport(out[0]), is_initiation(out[1])] == [True, True]


def test_reject_after_messages_stops_sending() -> None:
    pair = established_pair()
    pair.now += 10.0
    keypair = pair.peer_ab.keypairs.current
    keypair.send_counter = REJECT_AFTER_MESSAGES - 1
    out = only_datagrams(pair.a.send(v4(b"last"), pair.now))
    transports_out = [d for d in out if is_transport(d)]
    assert len(transports_out) == 1
    assert unpack_transport_header(transports_out[0])[1] == REJECT_AFTER_MESSAGES - 1
    assert any(is_initiation(d) for d in out)  # counter is past REKEY_AFTER_MESSAGES
    pair.b.receive(transports_out[0], A_ADDR, pair.now)
    assert delivered(pair.b) == [v4(b"last")]
    pair.a.take_outbox()
    # Nothing more is sent on that keypair; the packet waits for the next session.
    waiting = v4(b"after the limit")
    out = only_datagrams(pair.a.send(waiting, pair.now + 0.1))
    assert not any(is_transport(d) for d in out)
    assert keypair.send_counter == REJECT_AFTER_MESSAGES
    assert list(pair.peer_ab.staged) == [waiting]
    pair.now += 6.0
    pair.a.send(waiting, pair.now)
    pair.roundtrip()
    assert delivered(pair.b)[1:] == [waiting, waiting]
    assert pair.peer_ab.keypairs.current is not keypair


@pytest.mark.parametrize("counter", [REJECT_AFTER_MESSAGES, (1 << 64) - 1])
def test_received_counter_at_reject_after_messages_is_dropped(counter: int) -> None:
    pair = established_pair()
    forged = seal_transport(pair, counter, v4())
    assert pair.b.receive(forged, ("192.0.2.99", 9), pair.now) == []
    assert pair.b.delivered == []
    assert sum(pair.b.device.dropped.values()) == 1
    assert pair.peer_ba.endpoint == Endpoint(*A_ADDR)
    # The counter just below the limit is accepted.
    ok = seal_transport(pair, REJECT_AFTER_MESSAGES - 1, v4())
    pair.b.receive(ok, A_ADDR, pair.now)
    assert delivered(pair.b) == [v4()]


def test_transport_replay_is_dropped() -> None:
    pair = established_pair()
    pair.a.send(v4(), pair.now)
    (data,) = pair.a.take_outbox()
    pair.b.receive(data, A_ADDR, pair.now)
    rx = pair.peer_ba.rx_bytes
    assert pair.b.receive(data, A_ADDR, pair.now) == []
    assert delivered(pair.b) == [v4()]
    assert pair.b.device.dropped["replay"] == 1
    assert pair.peer_ba.rx_bytes == rx


def test_out_of_order_transport_within_window_is_accepted() -> None:
    pair = established_pair()
    packets = [v4(bytes([i])) for i in range(5)]
    for p in packets:
        pair.a.send(p, pair.now)
    sent = pair.a.take_outbox()
    for data in reversed(sent):
        pair.b.receive(data, A_ADDR, pair.now)
    assert delivered(pair.b) == list(reversed(packets))


# --------------------------------------------------------------------------- routing, roaming


@pytest.mark.parametrize(
    "packet",
    [
        ipv4_packet("10.0.0.99", B_TUN4, b"spoofed"),
        ipv6_packet("fd00::99", B_TUN6, b"spoofed"),
        ipv4_packet(B_TUN4, B_TUN4, b"spoofed"),
        ipv4_packet("10.0.0.3", B_TUN4, b"belongs to C"),
    ],
)
def test_crypto_routing_on_receive(packet: bytes) -> None:
    pair = established_pair()
    carol = make_node("C", 50)
    pair.b.device.add_peer(carol.public_key, allowed_ips=[ipaddress.ip_network("10.0.0.3/32")])
    pair.a.send(packet, pair.now)  # A routes by destination only
    pair.roundtrip()
    assert pair.b.delivered == []
    assert pair.b.device.dropped["crypto-rp"] == 1


def test_roaming_follows_authenticated_packets_only() -> None:
    pair = established_pair()
    peer = pair.peer_ba
    pair.a.send(v4(b"1"), pair.now)
    pair.a.send(v4(b"2"), pair.now)
    first, second = pair.a.take_outbox()
    roamed = ("192.0.2.50", 6000)
    pair.b.receive(first, roamed, pair.now)
    assert peer.endpoint == Endpoint(*roamed)
    # A replayed packet from elsewhere does not move the endpoint.
    pair.b.receive(first, ("192.0.2.66", 7000), pair.now)
    assert peer.endpoint == Endpoint(*roamed)
    # Nor does garbage addressed to a valid index.
    receiver = unpack_transport_header(first)[0]
    garbage = transport_header(receiver, 99) + random.Random(0).randbytes(48)
    pair.b.receive(garbage, ("192.0.2.67", 7001), pair.now)
    tampered = second[:-1] + bytes([second[-1] ^ 1])
    pair.b.receive(tampered, ("192.0.2.68", 7002), pair.now)
    assert peer.endpoint == Endpoint(*roamed)
    assert pair.b.device.dropped["replay"] == 1
    assert pair.b.device.dropped["decrypt-failed"] == 2
    # B's replies go to the new endpoint.
    (reply,) = pair.b.send(v4_back(), pair.now)
    assert reply.destination == roamed
    # An authenticated handshake message roams too.
    pair.b.receive(second, A_ADDR, pair.now)
    assert peer.endpoint == Endpoint(*A_ADDR)


# --------------------------------------------------------------------------- statistics


def test_stats_count_whole_messages_on_both_sides() -> None:
    pair = make_pair(seed=4)
    pair.a.send(v4(b"x" * 10), pair.now)
    pair.roundtrip()
    for i in range(10):
        pair.now += 0.5
        pair.a.send(v4(b"a" * (i * 50)), pair.now)
        pair.b.send(ipv6_packet(B_TUN6, A_TUN6, b"b" * (i * 70)), pair.now)
        pair.roundtrip()
    pair.run(pair.now + 30.0)  # passive keepalives
    a_sent = sum(len(d) for d in datagrams(pair.a))
    b_sent = sum(len(d) for d in datagrams(pair.b))
    assert pair.peer_ab.tx_bytes == a_sent == pair.peer_ba.rx_bytes
    assert pair.peer_ba.tx_bytes == b_sent == pair.peer_ab.rx_bytes
    assert a_sent > 148 + 10 * 32
    assert any(len(d) == 148 for d in datagrams(pair.a))


def test_next_timer_and_handle_timer_when_idle() -> None:
    pair = make_pair()
    assert pair.a.device.next_timer() is None
    assert not pair.a.device.handle_timer(pair.now)
    pair.a.send(v4(), pair.now)
    deadline = pair.a.device.next_timer()
    assert deadline is not None
    assert not pair.a.device.handle_timer(deadline - 0.001)


def test_events_say_what_happened() -> None:
    pair = make_pair()
    actions = pair.a.send(v4(), pair.now)
    assert isinstance(actions[0], SendDatagram) and actions[0].destination == B_ADDR
    pair.roundtrip()
    assert isinstance(pair.b.delivered[0], Deliver)
    assert pair.a.events == [HandshakeInitiated(pair.peer_ab), HandshakeCompleted(pair.peer_ab)]
    assert pair.b.events == [HandshakeResponded(pair.peer_ba), HandshakeCompleted(pair.peer_ba)]
    pair.b.receive(b"\x09junk", A_ADDR, pair.now)
    assert pair.b.events[-1] == Dropped(DropReason.BAD_TYPE, Endpoint(*A_ADDR))


def test_pair_helpers_are_deterministic() -> None:
    pair = make_pair()
    assert roundtrip(pair.a, pair.b, pair.now) == 0  # nothing to move
    assert public_key(make_key(1)) == pair.a.public_key
    assert dh(make_key(1), pair.b.public_key) == pair.peer_ab.handshake.static_static


# --------------------------------------------------------------------------- more edge cases


@pytest.mark.parametrize("seed", range(4))
def test_simultaneous_initiations_converge(seed: int) -> None:
    # Both sides start a handshake at once: each abandons its own initiation on consuming the
    # other's, so both responses are dropped; the first retransmission completes a handshake.
    pair = make_pair(seed=seed)
    start = pair.now
    pair.a.send(v4(b"from a"), pair.now)
    pair.b.send(v4_back(b"from b"), pair.now)
    pair.run(start + REKEY_TIMEOUT + JITTER)
    assert delivered(pair.b) == [v4(b"from a")]
    assert delivered(pair.a) == [v4_back(b"from b")]
    assert pair.peer_ab.keypairs.current is not None
    assert pair.peer_ba.keypairs.current is not None


def test_responder_without_endpoint_learns_it_from_the_initiation() -> None:
    pair = make_pair(b_knows_a_endpoint=False)
    early = v4_back(b"waiting for an endpoint")
    assert pair.b.send(early, pair.now) == []  # no endpoint: nothing to send, not even a handshake
    assert list(pair.peer_ba.staged) == [early]
    pair.now += 1.0
    pair.a.send(v4(), pair.now)
    pair.roundtrip()
    assert pair.peer_ba.endpoint == Endpoint(*A_ADDR)
    assert delivered(pair.b) == [v4()]
    assert delivered(pair.a) == [early]  # flushed once the session is confirmed


def test_another_passive_keepalive_when_data_keeps_arriving() -> None:
    # Kernel timers.c wg_timers_data_received / wg_expired_send_keepalive: data received while
    # the keepalive timer is pending asks for another keepalive one interval later.
    pair = established_pair()
    start = pair.now
    pair.a.send(v4(b"1"), pair.now)
    pair.roundtrip()
    pair.now = start + 5.0
    pair.a.send(v4(b"2"), pair.now)
    pair.roundtrip()
    pair.run(start + 40.0)
    times = [t - start for t, d in pair.b.sent_data(since=start) if is_keepalive(d)]
    assert times == [pytest.approx(10.0), pytest.approx(20.0)]


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x50" + bytes(40),  # IP version 5
        ipv4_packet(A_TUN4, B_TUN4, b"x" * 10)[:-4] + bytes(0),  # shorter than its length
        b"\x45" + bytes(10),  # too short for an IPv4 header
        ipv6_packet(A_TUN6, B_TUN6, b"y" * 20)[:50],
    ],
    ids=["version", "truncated-v4", "short-v4", "truncated-v6"],
)
def test_authenticated_but_malformed_inner_packet_is_dropped(plaintext: bytes) -> None:
    pair = established_pair()
    forged = seal_transport(pair, 3, plaintext)
    assert pair.b.receive(forged, A_ADDR, pair.now) == []
    assert pair.b.delivered == []
    assert pair.b.device.dropped["bad-inner-packet"] == 1


def test_removed_peer_indices_are_freed() -> None:
    pair = established_pair()
    pair.a.send(v4(), pair.now)
    (data,) = pair.a.take_outbox()
    pair.b.device.remove_peer(pair.a.public_key)
    assert not pair.b.device._indices
    assert pair.b.receive(data, A_ADDR, pair.now) == []
    assert pair.b.device.dropped["unknown-index"] == 1
    assert pair.b.device.next_timer() is None


def test_keepalive_without_session_starts_a_handshake() -> None:
    pair = make_pair()
    out = only_datagrams(pair.a.absorb(pair.a.device.send_keepalive(pair.peer_ab, 1.0), 1.0))
    assert [is_initiation(d) for d in out] == [True]


def test_staged_packets_are_bounded_oldest_dropped() -> None:
    # Kernel queueing.h MAX_STAGED_PACKETS = 128; send.c drops the oldest beyond it.
    pair = make_pair()
    packets = [v4(i.to_bytes(2, "big")) for i in range(200)]
    for p in packets:
        pair.a.send(p, pair.now)
    pair.roundtrip()
    assert delivered(pair.b) == packets[-128:]


def test_private_key_equal_to_a_peer_removes_that_peer() -> None:
    pair = established_pair()
    pair.a.device.set_private_key(pair.b.device.private_key)
    assert pair.b.public_key not in pair.a.device.peers
    assert pair.a.send(v4(), pair.now) == []
    assert pair.a.device.dropped["no-route"] == 1
