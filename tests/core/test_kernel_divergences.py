"""Regression tests for the divergences from the Linux kernel a protocol review found (issue 13),
each on in-memory pairs under a fake clock. Each test names the kernel file it follows
(drivers/net/wireguard/...); each failed before the core followed it."""

from __future__ import annotations

import random
import struct

import pytest

from tests.pairs import (
    A_ADDR,
    A_TUN4,
    B_ADDR,
    B_TUN4,
    Pair,
    SendDatagram,
    drop_all,
    established_pair,
    ipv4_packet,
    is_initiation,
    is_response,
    make_pair,
)
from wgref import cookie
from wgref.constants import (
    KEEPALIVE_TIMEOUT,
    MESSAGE_COOKIE_REPLY,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
    UNDER_LOAD_THRESHOLD,
)
from wgref.cookie import RateLimiter, mac1_key
from wgref.crypto import generate_private_key, mac, public_key, xaead_decrypt
from wgref.handshake import HandshakeState
from wgref.messages import CookieReply, parse, transport_header
from wgref.results import (
    CookieReplyReceived,
    Dropped,
    DropReason,
    Endpoint,
    HandshakeCompleted,
)
from wgref.tunnel import Done, Error, Tunnel, WriteToNetwork

V4 = ipv4_packet(A_TUN4, B_TUN4, b"a->b")
V4_BACK = ipv4_packet(B_TUN4, A_TUN4, b"b->a")


def junk_initiation(responder_public: bytes, rng: random.Random) -> bytes:
    """Random content with a valid mac1: anyone who knows the public key can make these."""
    body = b"\x01\x00\x00\x00" + rng.randbytes(112)
    return body + mac(mac1_key(responder_public), body) + bytes(16)


def seal(pair: Pair, counter: int, plaintext: bytes) -> bytes:
    """A transport message from A on A's current keypair with any plaintext."""
    keypair = pair.peer_ab.keypairs.current
    assert keypair is not None
    nonce = struct.pack("<4xQ", counter)
    return transport_header(keypair.remote_index, counter) + keypair.sender.encrypt(
        nonce, plaintext, None
    )


def responder_waiting_for_confirmation() -> Pair:
    """A's initiation answered by B; B has a packet for A staged behind its unconfirmed
    ``next`` keypair; A has the response but its confirmation is not sent yet."""
    pair = make_pair()
    pair.a.absorb(pair.a.device.send_keepalive(pair.peer_ab, pair.now), pair.now)
    (initiation,) = pair.a.take_outbox()
    pair.b.receive(initiation, A_ADDR, pair.now)
    (response,) = pair.b.take_outbox()
    assert pair.peer_ba.keypairs.next is not None and pair.peer_ba.keypairs.current is None
    assert not pair.b.send(V4_BACK, pair.now)  # staged: B may not send on "next"
    assert list(pair.peer_ba.staged) == [V4_BACK]
    pair.a.receive(response, B_ADDR, pair.now)
    pair.a.take_outbox()  # A's confirming keepalive: the tests send their own
    return pair


# ----------------------------------------------------------------- 1. Tunnel's source


def test_tunnel_under_load_never_raises_for_its_opaque_source() -> None:
    """receive.c/cookie.c: under load, mac2 is checked against a cookie of the source. The
    Tunnel's stand-in source used to reach ipaddress and raise ValueError out of read()."""
    a_key, b_key = generate_private_key(), generate_private_key()
    tunnel = Tunnel(a_key, public_key(b_key))
    rng = random.Random(1)
    results = [
        tunnel.read(junk_initiation(public_key(a_key), rng), 1.0)
        for _ in range(UNDER_LOAD_THRESHOLD + 8)
    ]
    replies = [r for r in results if isinstance(r, WriteToNetwork)]
    assert replies and all(r.datagram[0] == MESSAGE_COOKIE_REPLY for r in replies)
    assert all(isinstance(r, WriteToNetwork | Error) for r in results)
    assert tunnel.device.dropped[DropReason.COOKIE_SENT] == len(replies)


def test_tunnel_read_takes_the_real_source_for_cookies() -> None:
    a_key, b_key = generate_private_key(), generate_private_key()
    tunnel = Tunnel(a_key, public_key(b_key))
    tunnel.device.load.report_backlog(UNDER_LOAD_THRESHOLD, 1.0)
    source = Endpoint("2001:db8::7", 4500)
    junk = junk_initiation(public_key(a_key), random.Random(2))
    reply = tunnel.read(junk, 1.0, source)
    assert isinstance(reply, WriteToNetwork) and reply.datagram[0] == MESSAGE_COOKIE_REPLY
    checker = tunnel.device.cookie_checker
    assert checker is not None
    message = parse(reply.datagram)
    assert isinstance(message, CookieReply)
    sealed = xaead_decrypt(
        cookie.cookie_key(public_key(a_key)), message.nonce, message.encrypted_cookie, junk[116:132]
    )
    assert sealed == checker.cookie_for(source, 1.0) != checker.cookie_for(Endpoint("peer", 0), 1.0)


@pytest.mark.parametrize("host", ["peer", "", "not an address", "fe80::1%nosuchif", "\udcff"])
def test_any_source_text_gets_a_stable_cookie(host: str) -> None:
    checker = cookie.CookieChecker.for_static(bytes(32))
    assert checker.cookie_for((host, 1), 0.0) == checker.cookie_for((host, 1), 1.0)
    assert checker.cookie_for((host, 1), 0.0) != checker.cookie_for((host, 2), 0.0)


# ----------------------------------------------------------------- 2. rate limiter


def test_ratelimiter_limits_an_ipv6_64_as_one_source() -> None:
    """ratelimiter.c: "Only use 64 bits" of an IPv6 source; PACKETS_BURSTABLE = 5."""
    limiter = RateLimiter()
    allowed = [limiter.allow(f"2001:db8:1:2::{i:x}", 10.0) for i in range(40)]
    assert sum(allowed) == 5
    # Another /64 has its own bucket; distinct IPv4 addresses each have one.
    assert limiter.allow("2001:db8:1:3::1", 10.0)
    assert all(limiter.allow(f"192.0.2.{i}", 10.0) for i in range(1, 40))


def test_ratelimiter_treats_v4_mapped_as_v4() -> None:
    limiter = RateLimiter()
    allowed = [limiter.allow("::ffff:192.0.2.1", 1.0) for _ in range(3)]
    allowed += [limiter.allow("192.0.2.1", 1.0) for _ in range(3)]
    assert sum(allowed) == 5


def test_ratelimiter_table_is_bounded() -> None:
    """ratelimiter.c: past max_entries, a new source is refused (until entries expire)."""
    limiter = RateLimiter(max_entries=16)
    assert all(limiter.allow(f"198.51.100.{i}", 1.0) for i in range(16))
    assert not limiter.allow("198.51.100.200", 1.0)
    assert limiter.allow("198.51.100.1", 1.2)  # a known source keeps its bucket
    assert limiter.allow("198.51.100.200", 3.0)  # idle entries were collected
    assert len(limiter.buckets) <= 16


def test_device_under_load_limits_a_64_of_sources() -> None:
    pair = make_pair(b_kwargs={"under_load_threshold": 1})
    b = pair.b.device
    checker = b.cookie_checker
    assert checker is not None
    peer = pair.peer_ab
    for i in range(40):
        source = (f"2001:db8:5:6::{i + 1:x}", 1000 + i)
        # A holds the cookie for this source: mac2 is valid, so only the rate limit decides.
        peer.cookie.cookie = checker.cookie_for(source, pair.now)
        peer.cookie.cookie_time = pair.now
        out = pair.a.device.initiate_handshake(peer, pair.now, force=True)
        (initiation,) = [d for _, d in out.datagrams()]
        pair.b.receive(initiation, source, pair.now)
    assert b.dropped[DropReason.RATELIMITED] == 40 - 5


# ----------------------------------------------------------------- 3, 4. key confirmation


def test_late_drop_keeps_what_key_confirmation_released() -> None:
    """receive.c wg_packet_consume_data_done: the keypair is confirmed and the staged packets
    are sent before the inner packet is checked; a bad inner packet is dropped after."""
    pair = responder_waiting_for_confirmation()
    not_ip = bytes(range(32))  # authenticated, but not an IPv4/IPv6 packet
    out = pair.b.device.receive_datagram(seal(pair, 1, not_ip), A_ADDR, pair.now)
    assert out.events[-1] == Dropped(DropReason.BAD_INNER_PACKET, Endpoint(*A_ADDR), pair.peer_ba)
    assert any(isinstance(e, HandshakeCompleted) for e in out.events)
    (staged,) = [d for _, d in out.datagrams()]
    assert pair.peer_ba.keypairs.current is not None and not pair.peer_ba.staged
    pair.a.receive(staged, B_ADDR, pair.now)
    assert [d.packet for d in pair.a.delivered] == [V4_BACK]


def test_key_confirmation_sends_the_staged_packets_to_the_new_endpoint() -> None:
    """receive.c wg_packet_consume_data_done: wg_socket_set_peer_endpoint comes before
    wg_noise_received_with_keypair releases the queue."""
    pair = responder_waiting_for_confirmation()
    roamed = Endpoint("192.0.2.99", 40000)
    out = pair.b.device.receive_datagram(seal(pair, 1, b""), roamed, pair.now)
    assert [dest for dest, _ in out.datagrams()] == [roamed]
    assert pair.peer_ba.endpoint == roamed


# ----------------------------------------------------------------- 6. cookie replies


def test_replayed_cookie_reply_is_refused() -> None:
    """cookie.c wg_cookie_consume_reply: one reply per mac1 sent (have_sent_mac1)."""
    pair = make_pair(b_kwargs={"under_load_threshold": 1})
    pair.a.send(V4, pair.now)
    (initiation,) = pair.a.take_outbox()
    (reply,) = [d for _, d in pair.b.device.receive_datagram(initiation, A_ADDR, pair.now)
                .datagrams()]
    assert reply[0] == MESSAGE_COOKIE_REPLY
    out = pair.a.device.receive_datagram(reply, B_ADDR, pair.now)
    assert out.events == [CookieReplyReceived(pair.peer_ab)]
    stored = (pair.peer_ab.cookie.cookie, pair.peer_ab.cookie.cookie_time)
    replayed = pair.a.device.receive_datagram(reply, B_ADDR, pair.now + 60)
    assert replayed.events == [
        Dropped(DropReason.UNEXPECTED_COOKIE, Endpoint(*B_ADDR), None)
    ]
    assert (pair.peer_ab.cookie.cookie, pair.peer_ab.cookie.cookie_time) == stored


# ----------------------------------------------------------------- 7. TAI64N from wall time


def test_restarted_tunnel_with_a_new_monotonic_clock_is_not_a_replay() -> None:
    """noise.c wg_noise_handshake_create_initiation: tai64n_now() is wall time (BoringTun
    likewise); the caller's ``now`` may be a monotonic clock that restarts at 0."""
    a_key, b_key = generate_private_key(), generate_private_key()
    wall = [1_700_000_000.0]

    def clock() -> float:
        return wall[0]

    responder = Tunnel(b_key, public_key(a_key), wall_clock=clock)
    first = Tunnel(a_key, public_key(b_key), wall_clock=clock)
    initiation = first.write(ipv4_packet(A_TUN4, B_TUN4), 5000.0)
    assert isinstance(initiation, WriteToNetwork)
    assert isinstance(responder.read(initiation.datagram, 5000.0), WriteToNetwork)
    wall[0] += 30.0  # the client restarts: its monotonic clock starts over
    restarted = Tunnel(a_key, public_key(b_key), wall_clock=clock)
    again = restarted.write(ipv4_packet(A_TUN4, B_TUN4), 3.0)
    assert isinstance(again, WriteToNetwork)
    answer = responder.read(again.datagram, 5030.0)
    assert isinstance(answer, WriteToNetwork) and len(answer.datagram) == 92


# ----------------------------------------------------------------- smaller ones


def test_keepalive_due_without_a_usable_key_starts_a_handshake() -> None:
    """timers.c wg_expired_send_keepalive -> send.c wg_packet_send_keepalive: an empty packet
    is staged, and with no valid keypair that starts a handshake."""
    pair = established_pair()
    pair.a.send(V4, pair.now)
    pair.roundtrip()  # B received data: its passive keepalive is due in KEEPALIVE_TIMEOUT
    keypair = pair.peer_ba.keypairs.current
    assert keypair is not None
    keypair.send_counter = REJECT_AFTER_MESSAGES  # no longer usable for sending
    pair.peer_ba.last_sent_handshake = None
    sent = pair.b.timer(pair.now + KEEPALIVE_TIMEOUT)
    assert [is_initiation(a.data) for a in sent] == [True]  # type: ignore[union-attr]


def test_late_response_after_giving_up_still_completes() -> None:
    """timers.c wg_expired_retransmit_handshake keeps the handshake state on giving up
    (only zero_key_material erases it): a late response is accepted."""
    pair = make_pair()
    start = pair.now
    pair.a.send(V4, pair.now)
    pair.run(start + 130.0, drop_ba=drop_all)
    peer = pair.peer_ab
    assert peer.timers.retransmit_handshake is None  # gave up
    assert peer.handshake.state is HandshakeState.CREATED_INITIATION
    last_response = [d for _, d in pair.b.sent_data() if is_response(d)][-1]
    out = pair.a.device.receive_datagram(last_response, B_ADDR, pair.now)
    assert HandshakeCompleted(peer) in out.events
    assert peer.keypairs.current is not None


def test_keep_key_fresh_on_receive_fires_once_per_session() -> None:
    """receive.c keep_key_fresh: sent_lastminute_handshake, reset by handshake_complete."""
    pair = established_pair()
    pair.now += REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT + 1.0
    initiations = 0
    for step in range(3):
        (data,) = [a.data for a in pair.b.send(V4_BACK, pair.now)]  # type: ignore[union-attr]
        pair.b.take_outbox()
        sent = pair.a.receive(data, B_ADDR, pair.now)
        initiations += sum(is_initiation(a.data) for a in sent if isinstance(a, SendDatagram))
        pair.now += REKEY_TIMEOUT + 1.0 if step == 0 else 0.5
    assert initiations == 1
    assert pair.peer_ab.sent_lastminute_handshake


def test_macs_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """cookie.c wg_cookie_validate_packet: crypto_memneq for mac1 and mac2."""
    calls: list[tuple[bytes, bytes]] = []
    real = cookie.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(cookie.hmac, "compare_digest", spy)
    pair = make_pair(b_kwargs={"under_load_threshold": 1})
    pair.a.send(V4, pair.now)
    (initiation,) = pair.a.take_outbox()
    pair.b.receive(initiation, A_ADDR, pair.now)
    assert len(calls) == 2  # mac1, then mac2 (under load)


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (ipv4_packet("10.0.0.99", B_TUN4, b"spoofed"), DropReason.CRYPTO_RP),
        (bytes(range(24)), DropReason.BAD_INNER_PACKET),
    ],
)
def test_rx_bytes_count_only_packets_that_pass(plaintext: bytes, reason: DropReason) -> None:
    """receive.c wg_packet_consume_data_done: update_rx_stats after the allowed-ips check;
    dishonest packets are not counted."""
    pair = established_pair()
    before = pair.peer_ba.rx_bytes
    out = pair.b.device.receive_datagram(seal(pair, 5, plaintext), A_ADDR, pair.now)
    assert out.events == [Dropped(reason, Endpoint(*A_ADDR), pair.peer_ba)]
    assert pair.peer_ba.rx_bytes == before
    good = seal(pair, 6, V4)
    pair.b.receive(good, A_ADDR, pair.now)
    assert pair.peer_ba.rx_bytes == before + len(good)


def test_tunnel_reports_drops_from_events() -> None:
    a_key, b_key = generate_private_key(), generate_private_key()
    tunnel = Tunnel(a_key, public_key(b_key))
    assert tunnel.read(b"\x09\x00\x00\x00", 1.0) == Error(DropReason.BAD_TYPE)
    assert tunnel.write(b"\x00", 1.0) == Error(DropReason.BAD_OUTBOUND_PACKET)
    assert tunnel.read(b"", 1.0) == Done()
