"""Cookies and DoS mitigation: mac1/mac2, cookie replies, load and rate limiting (WP 5.3, 5.4.4,
5.4.7, 6.6; kernel cookie.c, ratelimiter.c, receive.c).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .constants import (
    COOKIE_NONCE_LEN,
    COOKIE_SECRET_LATENCY,
    COOKIE_SECRET_MAX_AGE,
    LABEL_COOKIE,
    LABEL_MAC1,
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_THRESHOLD,
)
from .crypto import InvalidTag, hash_, mac, xaead_decrypt, xaead_encrypt
from .errors import ProtocolError
from .messages import CookieReply, mac1_offset
from .results import DropReason, Endpoint

Address = Endpoint | tuple[str, int]
MAC_SIZE = 16
# ratelimiter.c: max_entries is 8 per bucket of a table of 8192 buckets (machines with more
# than 1 GiB of RAM); beyond it, new sources are refused until entries expire.
RATELIMIT_MAX_ENTRIES = 8 * 8192


def mac1_key(static_public: bytes) -> bytes:
    """WP 5.4.4: the mac1 key is HASH(LABEL_MAC1 || receiver's static public key)."""
    return hash_(LABEL_MAC1, static_public)


def cookie_key(static_public: bytes) -> bytes:
    """WP 5.4.7: the cookie encryption key is HASH(LABEL_COOKIE || sender's static public)."""
    return hash_(LABEL_COOKIE, static_public)


def source_bytes(source: Address) -> bytes:
    """A, the source IP address and UDP port (WP 5.4.7), as the kernel encodes it
    (cookie.c ``make_cookie``: the address bytes then the port in network byte order).

    A source that is not an IP address (an opaque name a caller without sockets gives, as
    :class:`~wgref.tunnel.Tunnel` may) is hashed as its text: stable, and never an error."""
    host = source[0].split("%", 1)[0]
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:
        packed = hash_(b"wgref opaque source", host.encode("utf-8", "surrogateescape"))
    return packed + struct.pack(">H", source[1] & 0xFFFF)


def mac1_valid(message: bytes, key: bytes) -> bool:
    # cookie.c wg_cookie_validate_packet: crypto_memneq, a constant-time comparison.
    offset = mac1_offset(message[0])
    return hmac.compare_digest(mac(key, message[:offset]), message[offset : offset + MAC_SIZE])


@dataclass(slots=True)
class CookieMaker:
    """The sending side: adds mac1/mac2 to our handshake messages to one peer and keeps the
    last cookie that peer sent us (WP 5.4.4, 5.4.7)."""

    mac1_key: bytes
    cookie_key: bytes
    cookie: bytes | None = None
    cookie_time: float = 0.0
    last_mac1: bytes | None = None  # the mac1 a cookie reply must be bound to
    have_sent_mac1: bool = False  # cookie.c: one reply is accepted per mac1 sent

    @classmethod
    def for_peer(cls, peer_static: bytes) -> CookieMaker:
        return cls(mac1_key(peer_static), cookie_key(peer_static))

    def add_macs(self, body: bytes, now: float) -> bytes:
        """``body`` is a handshake message up to mac1; returns the whole message."""
        mac1 = mac(self.mac1_key, body)
        self.last_mac1 = mac1
        self.have_sent_mac1 = True
        # Kernel cookie.c: a cookie is used for COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY.
        fresh = self.cookie is not None and (
            now - self.cookie_time < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY
        )
        mac2 = mac(self.cookie, body + mac1) if fresh and self.cookie else bytes(MAC_SIZE)
        return body + mac1 + mac2

    def consume_reply(self, reply: CookieReply, now: float) -> None:
        """Store the cookie of a reply (WP 5.4.7). It is only used for the next handshake
        message; nothing is resent now (WP 6.6). Raises :class:`ProtocolError`."""
        # cookie.c wg_cookie_consume_reply: only while have_sent_mac1, cleared by the first
        # reply that authenticates (a replayed reply is refused).
        if self.last_mac1 is None or not self.have_sent_mac1:
            raise ProtocolError(DropReason.UNEXPECTED_COOKIE, "no handshake awaits a cookie")
        try:
            cookie = xaead_decrypt(
                self.cookie_key, reply.nonce, reply.encrypted_cookie, self.last_mac1
            )
        except InvalidTag as exc:
            raise ProtocolError(DropReason.DECRYPT_FAILED, "cookie reply not authentic") from exc
        self.cookie, self.cookie_time = cookie, now
        self.have_sent_mac1 = False


@dataclass(slots=True)
class CookieChecker:
    """The receiving side: checks mac1/mac2 of handshake messages addressed to our static key
    and makes cookie replies. The secret R_m changes every two minutes (WP 5.4.7)."""

    mac1_key: bytes
    cookie_key: bytes
    random_bytes: Callable[[int], bytes] = os.urandom
    secret: bytes = b""
    secret_time: float = float("-inf")

    @classmethod
    def for_static(
        cls, static_public: bytes, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> CookieChecker:
        return cls(mac1_key(static_public), cookie_key(static_public), random_bytes)

    def check_mac1(self, message: bytes) -> bool:
        return mac1_valid(message, self.mac1_key)

    def _current_secret(self, now: float) -> bytes:
        if now - self.secret_time >= COOKIE_SECRET_MAX_AGE:
            self.secret, self.secret_time = self.random_bytes(32), now
        return self.secret

    def cookie_for(self, source: Address, now: float) -> bytes:
        """tau = MAC(R_m, A) (WP 5.4.7)."""
        return mac(self._current_secret(now), source_bytes(source))

    def check_mac2(self, message: bytes, source: Address, now: float) -> bool:
        offset = mac1_offset(message[0]) + MAC_SIZE
        expected = mac(self.cookie_for(source, now), message[:offset])
        return hmac.compare_digest(expected, message[offset : offset + MAC_SIZE])

    def make_reply(self, message: bytes, source: Address, now: float) -> CookieReply:
        """A cookie reply to ``message``: XAEAD(key, nonce, tau, mac1 of message) (WP 5.4.7)."""
        kind = message[0]
        receiver = struct.unpack_from("<I", message, 4)[0]  # the sender index of the message
        offset = mac1_offset(kind)
        msg_mac1 = message[offset : offset + MAC_SIZE]
        nonce = self.random_bytes(COOKIE_NONCE_LEN)
        encrypted = xaead_encrypt(self.cookie_key, nonce, self.cookie_for(source, now), msg_mac1)
        return CookieReply(receiver, nonce, encrypted)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


def ratelimit_key(host: str) -> bytes:
    """ratelimiter.c: an IPv4 source is limited by address, an IPv6 source by its /64
    ("Only use 64 bits"). An IPv4-mapped IPv6 address counts as IPv4; a source that is not
    an address (an opaque name) by its text."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return b"name:" + host.encode("utf-8", "surrogateescape")
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped.packed
        return address.packed[:8]
    return address.packed


@dataclass(slots=True)
class RateLimiter:
    """Token bucket per source for handshakes under load (kernel ratelimiter.c:
    PACKETS_PER_SECOND = 20, PACKETS_BURSTABLE = 5; IPv6 by /64; a bounded table)."""

    rate: float = RATELIMIT_PACKETS_PER_SECOND
    burst: float = RATELIMIT_BURST
    max_entries: int = RATELIMIT_MAX_ENTRIES
    buckets: dict[bytes, _Bucket] = field(default_factory=dict)
    last_gc: float = 0.0

    def allow(self, host: str, now: float) -> bool:
        if now - self.last_gc >= 1.0:
            self._collect(now)
        key = ratelimit_key(host)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_entries:
                return False  # ratelimiter.c: the table is full, the packet is dropped
            self.buckets[key] = _Bucket(self.burst - 1.0, now)
            return True
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.rate)
        bucket.last = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _collect(self, now: float) -> None:
        # A bucket idle for a full refill is the same as no bucket (kernel: entries older
        # than 1 s are freed by the gc work).
        full = self.burst / self.rate
        self.buckets = {h: b for h, b in self.buckets.items() if now - b.last < full}
        self.last_gc = now


@dataclass(slots=True)
class LoadMonitor:
    """Decides "under load" (WP 5.3). The kernel uses the depth of its handshake queue
    (>= MAX_QUEUED_INCOMING_HANDSHAKES / 8, receive.c) and stays under load for 1 s after.

    A sans-I/O core has no queue of its own, so two signals count: the backlog the I/O shell
    reports (:meth:`report_backlog`), and the number of handshake messages seen within the
    last second, which stands for the queue depth when the shell cannot see one.
    """

    threshold: int = UNDER_LOAD_THRESHOLD
    window_start: float = float("-inf")
    window_count: int = 0
    backlog: int = 0
    last_loaded: float = float("-inf")

    def report_backlog(self, pending: int, now: float) -> None:
        self.backlog = pending
        if pending >= self.threshold:
            self.last_loaded = now

    def record_handshake(self, now: float) -> bool:
        """Count one handshake message; returns whether we are under load now."""
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.window_count >= self.threshold or self.backlog >= self.threshold:
            self.last_loaded = now
        return now - self.last_loaded < UNDER_LOAD_AFTER_TIME
