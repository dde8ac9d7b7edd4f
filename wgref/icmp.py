"""ICMP "destination unreachable" for packets the interface cannot send, as the kernel's
WireGuard sends them (device.c wg_xmit: ``icmp_ndo_send(skb, ICMP_DEST_UNREACH,
ICMP_HOST_UNREACH, 0)`` / ``icmpv6_ndo_send(skb, ICMPV6_DEST_UNREACH, ICMPV6_ADDR_UNREACH, 0)``
when no peer has the destination in its allowed ips, or the peer has no endpoint).

Pure packet work: which packets may get an error (the rules of net/ipv4/icmp.c __icmp_send and
net/ipv6/icmp.c icmp6_send: never about an ICMP error, a non-first fragment, a multicast or
broadcast packet or an unspecified source), the error itself, and the kernel's rate limits
(net.ipv4.icmp_msgs_per_sec=1000 with a burst of 50 for the host; icmp_ratelimit=1 s with a
burst of 6 per destination, but none for errors to the host itself).
"""

from __future__ import annotations

import os
import struct

from .offload import checksum

__all__ = ["ErrorRateLimit", "unreachable", "wants_error"]

_ICMP, _ICMPV6 = 1, 58
_DEST_UNREACH, _HOST_UNREACH = 3, 1  # ICMPv4 (RFC 792)
_V6_DEST_UNREACH, _V6_ADDR_UNREACH = 1, 3  # ICMPv6 (RFC 4443)
_V4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})  # unreachable, quench, redirect, time, param
_V4_MAX = 576  # RFC 1812 4.3.2.3: an ICMPv4 error fits in 576 bytes
_V6_MAX = 1280  # RFC 4443 2.4 (c): as much as fits in the minimum IPv6 MTU
_IPTOS_PREC_INTERNETCONTROL = 0xC0


def _v4_source_ok(address: bytes) -> bool:
    first = address[0]
    return address != bytes(4) and first < 224 and address != b"\xff\xff\xff\xff"


def wants_error(packet: bytes) -> bool:
    """Whether the kernel would answer ``packet`` with an ICMP error at all."""
    if len(packet) < 20:
        return False
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or len(packet) < ihl or (packet[6] & 0x1F) or packet[7]:
            return False  # bad header, or not the first fragment
        if not _v4_source_ok(packet[12:16]) or packet[16] >= 224:
            return False
        return not (packet[9] == _ICMP and (len(packet) <= ihl or packet[ihl] in _V4_ERROR_TYPES))
    if version == 6 and len(packet) >= 40:
        sender, destination = packet[8:24], packet[24:40]
        if sender == bytes(16) or sender[0] == 0xFF or destination[0] == 0xFF:
            return False
        if sender[0] == 0xFE and sender[1] & 0xC0 == 0x80:
            return False  # link-local: the route back needs the tunnel's scope (not sent)
        return not (packet[6] == _ICMPV6 and (len(packet) <= 40 or packet[40] < 128))
    return False


def unreachable(packet: bytes, source: bytes) -> bytes | None:
    """The ICMP/ICMPv6 error that tells ``packet``'s sender its destination is unreachable,
    sent from ``source`` (the address routing picks to reach the sender); None when the
    kernel would send none."""
    if not wants_error(packet):
        return None
    version = packet[0] >> 4
    if version == 4:
        if len(source) != 4:
            return None
        quoted = packet[: _V4_MAX - 28]
        body = bytearray(struct.pack(">BBHI", _DEST_UNREACH, _HOST_UNREACH, 0, 0) + quoted)
        body[2:4] = checksum(body).to_bytes(2, "big")
        tos = (packet[1] & 0x1E) | _IPTOS_PREC_INTERNETCONTROL
        ip_header = bytearray(
            struct.pack(
                ">BBHHHBBH4s4s",
                0x45,
                tos,
                20 + len(body),
                int.from_bytes(os.urandom(2), "big"),
                0,
                64,
                _ICMP,
                0,
                source,
                packet[12:16],
            )
        )
        ip_header[10:12] = checksum(ip_header).to_bytes(2, "big")
        return bytes(ip_header + body)
    if version == 6:
        if len(source) != 16:
            return None
        sender = packet[8:24]
        quoted = packet[: _V6_MAX - 48]
        body = bytearray(struct.pack(">BBHI", _V6_DEST_UNREACH, _V6_ADDR_UNREACH, 0, 0) + quoted)
        pseudo = source + sender + struct.pack(">I3xB", len(body), _ICMPV6)
        body[2:4] = checksum(pseudo + body).to_bytes(2, "big")
        header = struct.pack(">IHBB16s16s", 6 << 28, len(body), _ICMPV6, 64, source, sender)
        return header + bytes(body)
    return None


class ErrorRateLimit:
    """The kernel's ICMP error limits: a host-wide token bucket (icmp_global_allow:
    ``msgs_per_sec`` with ``burst``), and per destination one error per ``interval`` with a
    burst of 6 (inet_peer_xrlim_allow), skipped for errors to the host itself (icmp.c:
    no rate limit on loopback)."""

    def __init__(self, msgs_per_sec: float = 1000, burst: float = 50, interval: float = 1.0):
        self.rate, self.burst, self.interval = msgs_per_sec, burst, interval
        self.tokens = burst
        self.updated = 0.0
        self._peers: dict[bytes, tuple[float, float]] = {}

    def allow(self, destination: bytes, local: bool, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        if not local:
            peers = self._peers
            if len(peers) > 4096:
                peers.clear()
            tokens, last = peers.get(destination, (6 * self.interval, now))
            tokens = min(6 * self.interval, tokens + now - last)
            if tokens < self.interval:
                peers[destination] = (tokens, now)
                return False
            peers[destination] = (tokens - self.interval, now)
        self.tokens -= 1
        return True
