"""mac1/mac2, cookie replies, the rate limiter and the load monitor (WP 5.3, 5.4.4, 5.4.7)."""

from __future__ import annotations

import random

import pytest

from wgref.constants import (
    COOKIE_SECRET_LATENCY,
    COOKIE_SECRET_MAX_AGE,
    LABEL_COOKIE,
    LABEL_MAC1,
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
)
from wgref.cookie import (
    CookieChecker,
    CookieMaker,
    LoadMonitor,
    RateLimiter,
    cookie_key,
    mac1_key,
    source_bytes,
)
from wgref.crypto import clamp, hash_, mac, public_key, xaead_decrypt
from wgref.errors import ProtocolError
from wgref.messages import CookieReply, Initiation, Response, parse

RNG = random.Random(11)
SERVER_PUB = public_key(clamp(RNG.randbytes(32)))
SOURCE = ("192.0.2.7", 40000)


def det_bytes(seed: int):
    rng = random.Random(seed)
    return rng.randbytes


def initiation_body(sender: int = 0x01020304) -> bytes:
    return Initiation(sender, RNG.randbytes(32), RNG.randbytes(48), RNG.randbytes(28)).to_bytes()[
        :116
    ]


def test_keys() -> None:
    assert mac1_key(SERVER_PUB) == hash_(LABEL_MAC1 + SERVER_PUB)
    assert cookie_key(SERVER_PUB) == hash_(LABEL_COOKIE + SERVER_PUB)


def test_source_bytes() -> None:
    assert source_bytes(("192.0.2.1", 51820)) == bytes([192, 0, 2, 1]) + b"\xca\x6c"
    link_local = bytes.fromhex("fe80" + "0" * 26 + "01")
    assert source_bytes(("fe80::1%eth0", 1)) == link_local + b"\x00\x01"
    assert len(source_bytes(("2001:db8::1", 65535))) == 18


def test_add_macs_without_cookie() -> None:
    maker = CookieMaker.for_peer(SERVER_PUB)
    body = initiation_body()
    data = maker.add_macs(body, now=0.0)
    assert len(data) == 148
    assert data[116:132] == mac(mac1_key(SERVER_PUB), body)
    assert data[132:] == bytes(16)  # no cookie: mac2 is zero (WP 5.4.4)
    checker = CookieChecker.for_static(SERVER_PUB)
    assert checker.check_mac1(data)
    assert not CookieChecker.for_static(public_key(clamp(RNG.randbytes(32)))).check_mac1(data)
    flipped = data[:10] + bytes([data[10] ^ 1]) + data[11:]
    assert not checker.check_mac1(flipped)


def test_response_macs() -> None:
    maker = CookieMaker.for_peer(SERVER_PUB)
    body = Response(1, 2, RNG.randbytes(32), RNG.randbytes(16)).to_bytes()[:60]
    data = maker.add_macs(body, now=0.0)
    assert len(data) == 92
    assert CookieChecker.for_static(SERVER_PUB).check_mac1(data)
    assert data[60:76] == mac(mac1_key(SERVER_PUB), body)


def test_cookie_reply_round_trip_and_mac2() -> None:
    checker = CookieChecker.for_static(SERVER_PUB, det_bytes(1))
    maker = CookieMaker.for_peer(SERVER_PUB)
    data = maker.add_macs(initiation_body(0xCAFE), now=1.0)
    assert not checker.check_mac2(data, SOURCE, now=1.0)
    reply = checker.make_reply(data, SOURCE, now=1.0)
    assert reply.receiver == 0xCAFE
    assert len(reply.to_bytes()) == 64
    assert parse(reply.to_bytes()) == reply
    # The encrypted cookie is tau = MAC(R_m, A), bound to the mac1 of the message.
    tau = xaead_decrypt(cookie_key(SERVER_PUB), reply.nonce, reply.encrypted_cookie, data[116:132])
    assert tau == checker.cookie_for(SOURCE, now=1.0)
    maker.consume_reply(reply, now=1.5)
    assert maker.cookie == tau
    again = maker.add_macs(initiation_body(0xCAFF), now=2.0)
    assert again[132:] == mac(tau, again[:132])
    assert checker.check_mac2(again, SOURCE, now=2.0)
    # mac2 is bound to the source address and port.
    assert not checker.check_mac2(again, ("192.0.2.7", 40001), now=2.0)
    assert not checker.check_mac2(again, ("192.0.2.8", 40000), now=2.0)


def test_consume_reply_failures() -> None:
    checker = CookieChecker.for_static(SERVER_PUB, det_bytes(2))
    maker = CookieMaker.for_peer(SERVER_PUB)
    data = CookieMaker.for_peer(SERVER_PUB).add_macs(initiation_body(), now=0.0)
    reply = checker.make_reply(data, SOURCE, now=0.0)
    with pytest.raises(ProtocolError) as info:
        maker.consume_reply(reply, now=0.0)  # maker never sent anything
    assert info.value.reason == "unexpected-cookie"
    maker.add_macs(initiation_body(), now=0.0)  # a different message: other mac1
    with pytest.raises(ProtocolError) as info:
        maker.consume_reply(reply, now=0.0)
    assert info.value.reason == "decrypt-failed"
    assert maker.cookie is None
    bad = CookieReply(reply.receiver, reply.nonce, bytes(32))
    with pytest.raises(ProtocolError):
        maker.consume_reply(bad, now=0.0)


def test_cookie_expires_for_the_sender() -> None:
    checker = CookieChecker.for_static(SERVER_PUB, det_bytes(3))
    maker = CookieMaker.for_peer(SERVER_PUB)
    data = maker.add_macs(initiation_body(), now=0.0)
    maker.consume_reply(checker.make_reply(data, SOURCE, now=0.0), now=0.0)
    fresh_until = COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY
    assert maker.add_macs(initiation_body(), now=fresh_until - 0.01)[132:] != bytes(16)
    assert maker.add_macs(initiation_body(), now=fresh_until)[132:] == bytes(16)


def test_cookie_secret_rotates() -> None:
    checker = CookieChecker.for_static(SERVER_PUB, det_bytes(4))
    first = checker.cookie_for(SOURCE, now=0.0)
    assert checker.cookie_for(SOURCE, now=COOKIE_SECRET_MAX_AGE - 0.01) == first
    assert checker.cookie_for(SOURCE, now=COOKIE_SECRET_MAX_AGE) != first
    assert checker.cookie_for(("192.0.2.8", 40000), now=COOKIE_SECRET_MAX_AGE) != first


def test_rate_limiter() -> None:
    limiter = RateLimiter()
    allowed = [limiter.allow("192.0.2.1", 0.0) for _ in range(RATELIMIT_BURST + 3)]
    assert allowed == [True] * RATELIMIT_BURST + [False] * 3
    assert limiter.allow("192.0.2.2", 0.0)  # per source address
    assert limiter.allow("192.0.2.1", 1.0 / RATELIMIT_PACKETS_PER_SECOND)
    assert not limiter.allow("192.0.2.1", 1.0 / RATELIMIT_PACKETS_PER_SECOND)
    # After a long pause the full burst is available again.
    later = [limiter.allow("192.0.2.1", 10.0) for _ in range(RATELIMIT_BURST + 1)]
    assert later == [True] * RATELIMIT_BURST + [False]


def test_rate_limiter_steady_rate() -> None:
    limiter = RateLimiter()
    t, ok = 0.0, 0
    for _ in range(200):  # 200 attempts over 2 s at 100/s
        ok += limiter.allow("192.0.2.1", t)
        t += 0.01
    assert ok <= RATELIMIT_BURST + 2 * RATELIMIT_PACKETS_PER_SECOND + 1
    assert ok >= 2 * RATELIMIT_PACKETS_PER_SECOND


def test_load_monitor() -> None:
    load = LoadMonitor(threshold=3)
    assert not load.record_handshake(0.0)
    assert not load.record_handshake(0.1)
    assert load.record_handshake(0.2)  # the third within a second
    assert load.record_handshake(1.1)  # still under load for 1 s after
    assert not load.record_handshake(2.3)
    load.report_backlog(5, now=3.0)
    assert load.record_handshake(3.0)
    load.report_backlog(0, now=4.5)
    assert not load.record_handshake(4.5)
