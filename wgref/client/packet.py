"""IPv4/IPv6 packet surgery for the client: parse, rewrite addresses and ports, clamp the TCP
MSS, recompute checksums, fragment for the tunnel MTU, reassemble, build ICMP errors.

Everything works on whole packets (``bytes`` in, ``bytes`` out) and never raises on bad input:
parsers return None for what they do not understand.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..offload import checksum

TCP = 6
UDP = 17
ICMP = 1
ICMPV6 = 58
FRAGMENT = 44
_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
_IPV4 = struct.Struct(">2xH2xHxB2x4s4s")  # total length, flags+offset, protocol, addresses
_PORTS = struct.Struct(">HH")


@dataclass(slots=True)
class Info:
    """Where things are in a packet."""

    version: int
    proto: int  # the upper-layer protocol (after IPv6 extension headers)
    header_len: int  # offset of the upper-layer header
    src: bytes
    dst: bytes
    fragment: bool  # a fragment (IPv4 MF/offset or an IPv6 fragment header)
    sport: int = 0  # port, or an echo identifier on the requester's side
    dport: int = 0
    tcp_flags: int = 0


def parse(packet: bytes | bytearray | memoryview) -> Info | None:
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total, frag, proto, src, dst = _IPV4.unpack_from(packet)
        if ihl < 20 or total < ihl or total > len(packet):
            return None
        info = Info(4, proto, ihl, src, dst, frag & 0x3FFF != 0)
    elif version == 6:
        if len(packet) < 40 or 40 + ((packet[4] << 8) | packet[5]) > len(packet):
            return None
        proto, offset, fragment = packet[6], 40, False
        while proto in _EXTENSIONS or proto == FRAGMENT:
            if offset + 8 > len(packet):
                return None
            if proto == FRAGMENT:
                fragment = True
                proto, offset = packet[offset], offset + 8
            else:
                proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        info = Info(6, proto, offset, bytes(packet[8:24]), bytes(packet[24:40]), fragment)
    else:
        return None
    if info.fragment:
        return info
    offset, proto = info.header_len, info.proto
    if proto == UDP and offset + 8 <= len(packet):
        info.sport, info.dport = _PORTS.unpack_from(packet, offset)
    elif proto == TCP and offset + 20 <= len(packet):
        info.sport, info.dport = _PORTS.unpack_from(packet, offset)
        info.tcp_flags = packet[offset + 13]
    elif proto == (ICMP if version == 4 else ICMPV6) and offset + 8 <= len(packet):
        kind = packet[offset]
        ident = (packet[offset + 4] << 8) | packet[offset + 5]
        if kind == ECHO_REQUEST[version]:
            info.sport = ident
        elif kind == ECHO_REPLY[version]:
            info.dport = ident
    elif proto in (TCP, UDP, ICMP, ICMPV6):
        return None
    return info


def pure_ack(packet: bytes | bytearray | memoryview, info: Info) -> bool:
    """A TCP segment with ACK and no data, SYN, FIN or RST."""
    start = info.header_len
    return (info.proto == TCP and info.tcp_flags & 0x17 == 0x10
            and len(packet) == start + (packet[start + 12] >> 4) * 4)


def _pseudo(version: int, src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The partial one's-complement sum of the pseudo header."""
    if version == 4:
        data = src + dst + struct.pack(">BBH", 0, proto, length)
    else:
        data = src + dst + struct.pack(">IxxxB", length, proto)
    return ~checksum(data) & 0xFFFF


def fix_checksums(buf: bytearray, info: Info) -> None:
    """Recompute the IPv4 header checksum and the TCP/UDP/ICMP checksum in place."""
    if info.version == 4:
        ihl = info.header_len
        buf[10:12] = b"\0\0"
        buf[10:12] = checksum(memoryview(buf)[:ihl]).to_bytes(2, "big")
        end = (buf[2] << 8) | buf[3]
    else:
        end = 40 + ((buf[4] << 8) | buf[5])
    if info.fragment:
        return
    start = info.header_len
    length = end - start
    if info.proto == TCP:
        where = start + 16
    elif info.proto == UDP:
        where = start + 6
        if info.version == 4 and buf[where : where + 2] == b"\0\0":
            return  # IPv4 UDP without a checksum stays without one
    elif info.proto in (ICMP, ICMPV6):
        where = start + 2
    else:
        return
    if where + 2 > end:
        return
    buf[where : where + 2] = b"\0\0"
    initial = 0 if info.proto == ICMP else _pseudo(info.version, info.src, info.dst, info.proto,
                                                   length)
    value = checksum(memoryview(buf)[start:end], initial)
    if info.proto == UDP and value == 0:
        value = 0xFFFF
    buf[where : where + 2] = value.to_bytes(2, "big")


def clamp_mss(buf: bytearray, info: Info, mss: int) -> bool:
    """Lower the MSS option of a TCP SYN to ``mss``; True when the packet changed."""
    if info.proto != TCP or not info.tcp_flags & 0x02 or info.fragment:
        return False
    start = info.header_len
    data_offset = (buf[start + 12] >> 4) * 4
    offset, end = start + 20, min(start + data_offset, len(buf))
    while offset < end:
        kind = buf[offset]
        if kind == 0:
            break
        if kind == 1:
            offset += 1
            continue
        if offset + 1 >= end:
            break
        size = buf[offset + 1]
        if size < 2:
            break
        if kind == 2 and size == 4 and offset + 4 <= end:
            current = (buf[offset + 2] << 8) | buf[offset + 3]
            if current > mss:
                buf[offset + 2 : offset + 4] = mss.to_bytes(2, "big")
                return True
            return False
        offset += size
    return False


def rewrite(
    packet: bytes | bytearray,
    info: Info,
    *,
    src: bytes | None = None,
    dst: bytes | None = None,
    sport: int | None = None,
    dport: int | None = None,
    mss: int | None = None,
    checksums: bool = True,
    valid: bool = False,
) -> bytes:
    """A copy with new addresses/ports (an echo identifier counts as the requester's port),
    the MSS clamped and every checksum recomputed (unless ``checksums`` is false: for a
    super-packet that is about to be segmented, which sets them per segment). With
    ``valid`` (the checksums of ``packet`` are complete, not left partial) they are updated
    for what changed instead (:func:`update_checksums`), as the kernel's NAT does."""
    buf = bytearray(packet)
    if info.version == 4:
        a, b = 12, 16
    else:
        a, b = 8, 24
    if src is not None:
        buf[a : a + len(src)] = src
        info.src = src
    if dst is not None:
        buf[b : b + len(dst)] = dst
        info.dst = dst
    start = info.header_len
    if not info.fragment:
        if info.proto in (TCP, UDP):
            if sport is not None:
                buf[start : start + 2] = sport.to_bytes(2, "big")
            if dport is not None:
                buf[start + 2 : start + 4] = dport.to_bytes(2, "big")
        elif info.proto in (ICMP, ICMPV6):
            ident = sport if buf[start] == ECHO_REQUEST[info.version] else dport
            if ident is not None:
                buf[start + 4 : start + 6] = ident.to_bytes(2, "big")
        if mss is not None:
            clamp_mss(buf, info, mss)
    if valid:
        update_checksums(packet, buf, info)
    elif checksums:
        fix_checksums(buf, info)
    return bytes(buf)


def update_checksums(old: bytes | bytearray, buf: bytearray, info: Info) -> None:
    """Update the IPv4 header checksum and the TCP/UDP/ICMP checksum of ``buf``, a copy of
    ``old`` (whose checksums are valid) with its addresses and upper-layer header changed:
    RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over the changed spans only (nf_nat_proto.c:
    ``inet_proto_csum_replace4`` and friends). A wrong checksum stays wrong, as through the
    kernel's NAT. A span of whole 16-bit words read as one big-endian number is its ones'
    complement sum mod 0xFFFF (2**16 == 1 mod 0xFFFF), so m' - m is one subtraction."""
    version, proto, start = info.version, info.proto, info.header_len
    if version == 4:
        delta = int.from_bytes(buf[12:20], "big") - int.from_bytes(old[12:20], "big")
        field = (buf[10] << 8) | buf[11]
        buf[10:12] = (0xFFFF - (0xFFFF - field + delta) % 0xFFFF).to_bytes(2, "big")
        if proto == ICMP:
            delta = 0  # no pseudo header (RFC 792)
    else:
        delta = int.from_bytes(buf[8:40], "big") - int.from_bytes(old[8:40], "big")
    if info.fragment:
        return
    # the checksum field, and the end of what rewrite may change (ports, echo identifier,
    # the MSS option)
    if proto == UDP:
        where, end = start + 6, start + 8
    elif proto == TCP:
        where, end = start + 16, start + (buf[start + 12] >> 4) * 4
    elif proto in (ICMP, ICMPV6):
        where, end = start + 2, start + 8
    else:
        return
    if end > len(buf) or where + 2 > end:  # malformed: summed whole, as before
        fix_checksums(buf, info)
        return
    field = (buf[where] << 8) | buf[where + 1]
    if field == 0 and proto == UDP and version == 4:
        return  # IPv4 UDP without a checksum stays without one
    delta += int.from_bytes(buf[start:end], "big") - int.from_bytes(old[start:end], "big")
    # never 0: UDP's 0 means "no checksum"; for TCP and ICMP 0xFFFF is the same sum
    buf[where : where + 2] = (0xFFFF - (0xFFFF - field + delta) % 0xFFFF).to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Translation:
    """One direction of a flow's NAT for its packets that need nothing else (TCP past the
    SYN, UDP; not fragments): the addresses and ports they get, and what that changes in
    their checksums, computed once per flow rather than per packet (the kernel's NAT also
    keeps one tuple per connection, nf_nat_core.c). The checksums are updated by RFC 1624
    eqn. 3 as in :func:`update_checksums`; the fields are 16-bit aligned."""

    version: int
    proto: int
    addresses: bytes  # source and destination, as written
    ports: bytes  # source and destination port
    ip_delta: int  # the IPv4 header checksum's m' - m (mod 0xFFFF)
    l4_delta: int  # the transport checksum's: the pseudo header's addresses and the ports

    @classmethod
    def between(cls, version: int, proto: int, old: tuple[bytes, int, bytes, int],
                new: tuple[bytes, int, bytes, int]) -> Translation:
        """From a packet's (src, sport, dst, dport) to the new ones."""
        old_addresses, new_addresses = old[0] + old[2], new[0] + new[2]
        old_ports, new_ports = _PORTS.pack(old[1], old[3]), _PORTS.pack(new[1], new[3])
        addresses = (int.from_bytes(new_addresses, "big")
                     - int.from_bytes(old_addresses, "big")) % 0xFFFF
        ports = (int.from_bytes(new_ports, "big") - int.from_bytes(old_ports, "big")) % 0xFFFF
        return cls(version, proto, new_addresses, new_ports,
                   addresses if version == 4 else 0, (addresses + ports) % 0xFFFF)

    def applies(self, info: Info) -> bool:
        """Whether ``info``'s packet can take this translation (else :func:`rewrite`)."""
        return (not info.fragment and info.proto == self.proto
                and (self.proto == UDP or (self.proto == TCP and not info.tcp_flags & 0x02)))

    def apply(self, buf: bytearray, info: Info) -> None:
        """Translate ``buf`` (a packet of the flow, which :meth:`applies`) in place; ``info``
        follows its addresses (as after :func:`rewrite`). A wrong checksum stays wrong, as
        through the kernel's NAT."""
        if self.version == 4:
            buf[12:20] = self.addresses
            field = (buf[10] << 8) | buf[11]
            buf[10:12] = (0xFFFF - (0xFFFF - field + self.ip_delta) % 0xFFFF).to_bytes(2, "big")
            info.src, info.dst = self.addresses[:4], self.addresses[4:]
        else:
            buf[8:40] = self.addresses
            info.src, info.dst = self.addresses[:16], self.addresses[16:]
        start = info.header_len
        buf[start : start + 4] = self.ports
        where = start + (6 if self.proto == UDP else 16)
        field = (buf[where] << 8) | buf[where + 1]
        if field == 0 and self.proto == UDP and self.version == 4:
            return  # IPv4 UDP without a checksum stays without one
        # never 0: UDP's 0 means "no checksum"; for TCP 0xFFFF is the same sum
        buf[where : where + 2] = (
            0xFFFF - (0xFFFF - field + self.l4_delta) % 0xFFFF).to_bytes(2, "big")


def mss_option(packet: bytes | bytearray, info: Info) -> int | None:
    """The MSS option of a TCP SYN, or None."""
    if info.proto != TCP or not info.tcp_flags & 0x02 or info.fragment:
        return None
    start = info.header_len
    offset, end = start + 20, min(start + (packet[start + 12] >> 4) * 4, len(packet))
    while offset + 1 < end:
        kind = packet[offset]
        if kind == 0:
            break
        if kind == 1:
            offset += 1
            continue
        size = packet[offset + 1]
        if size < 2:
            break
        if kind == 2 and size == 4 and offset + 4 <= end:
            return (packet[offset + 2] << 8) | packet[offset + 3]
        offset += size
    return None


def fragment(packet: bytes, info: Info, mtu: int) -> list[bytes]:
    """Split ``packet`` into fragments of at most ``mtu`` bytes (IPv4, or IPv6 as a source
    host does with a fragment header); packets that fit are returned as they are."""
    if len(packet) <= mtu:
        return [packet]
    if info.version == 4:
        ihl = info.header_len
        header, data = bytearray(packet[:ihl]), packet[ihl:]
        step = (mtu - ihl) & ~7
        base_flags = (packet[6] << 8 | packet[7]) & 0x2000
        base_offset = ((packet[6] << 8) | packet[7]) & 0x1FFF
        out = []
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            more = 0x2000 if pos + step < len(data) else base_flags
            header[2:4] = (ihl + len(chunk)).to_bytes(2, "big")
            header[6:8] = (more | (base_offset + pos // 8)).to_bytes(2, "big")
            header[10:12] = b"\0\0"
            header[10:12] = checksum(header).to_bytes(2, "big")
            out.append(bytes(header) + chunk)
        return out
    # IPv6: the unfragmentable part is the base header; everything else is fragmented.
    next_header, data = packet[6], packet[40 : 40 + ((packet[4] << 8) | packet[5])]
    ident = os.urandom(4)
    step = (mtu - 48) & ~7
    out = []
    for pos in range(0, len(data), step):
        chunk = data[pos : pos + step]
        more = 1 if pos + step < len(data) else 0
        header = bytearray(packet[:40])
        header[4:6] = (8 + len(chunk)).to_bytes(2, "big")
        header[6] = FRAGMENT
        frag = struct.pack(">BxH4s", next_header, pos | more, ident)
        out.append(bytes(header) + frag + chunk)
    return out


def too_big(packet: bytes | bytearray, info: Info, mtu: int, source: bytes) -> bytes:
    """An ICMP 'fragmentation needed' (IPv4) or 'packet too big' (IPv6) for ``packet``, from
    ``source`` to the packet's source, telling ``mtu``."""
    if info.version == 4:
        quoted = packet[: info.header_len + 8]
        icmp = bytearray(struct.pack(">BBHHH", 3, 4, 0, 0, mtu) + quoted)
        icmp[2:4] = checksum(icmp).to_bytes(2, "big")
        header = bytearray(
            struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, ICMP, 0, source,
                        info.src)
        )
        header[10:12] = checksum(header).to_bytes(2, "big")
        return bytes(header) + bytes(icmp)
    quoted = packet[: 1280 - 48]
    body = bytearray(struct.pack(">BBHI", 2, 0, 0, mtu) + quoted)
    initial = _pseudo(6, source, info.src, ICMPV6, len(body))
    body[2:4] = checksum(body, initial).to_bytes(2, "big")
    header6 = struct.pack(">IHBB16s16s", 6 << 28, len(body), ICMPV6, 64, source, info.src)
    return header6 + bytes(body)


class Reassembler:
    """Reassembles IPv4 and IPv6 fragments (bounded: at most ``limit`` datagrams in progress,
    each dropped after ``timeout`` seconds)."""

    def __init__(self, timeout: float = 30.0, limit: int = 256) -> None:
        self.timeout = timeout
        self.limit = limit
        self._pending: dict[tuple[bytes, ...], tuple[float, dict[int, bytes], int, bytes]] = {}

    def add(self, packet: bytes, info: Info, now: float) -> bytes | None:
        """The whole datagram once its last fragment arrived, else None."""
        if info.version == 4:
            field = (packet[6] << 8) | packet[7]
            offset, more = (field & 0x1FFF) * 8, bool(field & 0x2000)
            key = (info.src, info.dst, bytes([info.proto]), packet[4:6])
            payload = packet[info.header_len : (packet[2] << 8) | packet[3]]
            header = packet[: info.header_len]
        else:
            frag_at = self._v6_fragment_offset(packet)
            if frag_at is None:
                return None
            field = (packet[frag_at + 2] << 8) | packet[frag_at + 3]
            offset, more = field & 0xFFF8, bool(field & 1)
            key = (info.src, info.dst, b"", packet[frag_at + 4 : frag_at + 8])
            payload = packet[frag_at + 8 : 40 + ((packet[4] << 8) | packet[5])]
            header = bytes(packet[:frag_at]) + bytes([packet[frag_at]])  # + next header
        self._expire(now)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= self.limit:
                return None
            entry = (now, {}, -1, b"")
        started, parts, total, first = entry
        parts[offset] = bytes(payload)
        if offset == 0:
            first = bytes(header)
        if not more:
            total = offset + len(payload)
        self._pending[key] = (started, parts, total, first)
        if total < 0 or not first:
            return None
        data, position = bytearray(), 0
        for start in sorted(parts):
            if start > position:
                return None  # a hole
            data += parts[start][position - start :]
            position = max(position, start + len(parts[start]))
        if position < total:
            return None
        del self._pending[key]
        return self._rebuild(info.version, first, bytes(data[:total]))

    @staticmethod
    def _v6_fragment_offset(packet: bytes) -> int | None:
        proto, offset = packet[6], 40
        while proto in _EXTENSIONS:
            if offset + 8 > len(packet):
                return None
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        return offset if proto == FRAGMENT and offset + 8 <= len(packet) else None

    @staticmethod
    def _rebuild(version: int, first: bytes, data: bytes) -> bytes | None:
        if version == 4:
            header = bytearray(first)
            total = len(header) + len(data)
            if total > 0xFFFF:
                return None
            header[2:4] = total.to_bytes(2, "big")
            header[6:8] = b"\0\0"
            header[10:12] = b"\0\0"
            header[10:12] = checksum(header).to_bytes(2, "big")
            return bytes(header) + data
        # ``first`` is the unfragmentable part plus the fragment header's next-header byte.
        unfragmentable, next_header = bytearray(first[:-1]), first[-1]
        length = len(unfragmentable) - 40 + len(data)
        if length > 0xFFFF:
            return None
        unfragmentable[4:6] = length.to_bytes(2, "big")
        # the fragment header's predecessor must now name the upper layer
        if len(unfragmentable) == 40:
            unfragmentable[6] = next_header
        else:
            offset, last = 40, 6
            while offset < len(unfragmentable):
                last = offset
                offset += (unfragmentable[offset + 1] + 1) * 8
            unfragmentable[last] = next_header
        return bytes(unfragmentable) + data

    def _expire(self, now: float) -> None:
        stale = [k for k, v in self._pending.items() if now - v[0] > self.timeout]
        for key in stale:
            del self._pending[key]


ICMP_ERRORS = {4: (3, 4, 5, 11, 12), 6: (1, 2, 3, 4)}


@dataclass(slots=True)
class Quoted:
    """The packet quoted in an ICMP error (as we sent it): where it is and its 5-tuple."""

    offset: int  # of the quoted IP header
    l4: int  # of its upper-layer header
    proto: int
    src: bytes
    sport: int
    dst: bytes
    dport: int


def quoted(packet: bytes | bytearray, info: Info) -> Quoted | None:
    """The quoted packet of an ICMP/ICMPv6 error, or None for anything else."""
    if info.fragment or info.proto != (ICMP if info.version == 4 else ICMPV6):
        return None
    start = info.header_len
    if len(packet) < start + 8 or packet[start] not in ICMP_ERRORS[info.version]:
        return None
    offset = start + 8
    if info.version == 4:
        if len(packet) < offset + 20 or packet[offset] >> 4 != 4:
            return None
        l4 = offset + (packet[offset] & 0x0F) * 4
        proto, src, dst = packet[offset + 9], packet[offset + 12 : offset + 16], packet[
            offset + 16 : offset + 20]
    else:
        if len(packet) < offset + 40 or packet[offset] >> 4 != 6:
            return None
        l4 = offset + 40
        proto, src, dst = packet[offset + 6], packet[offset + 8 : offset + 24], packet[
            offset + 24 : offset + 40]
    if len(packet) < l4 + 8:
        return None
    sport, dport = 0, 0
    if proto in (TCP, UDP):
        sport, dport = struct.unpack_from(">HH", packet, l4)
    elif proto in (ICMP, ICMPV6) and packet[l4] == ECHO_REQUEST[info.version]:
        sport = (packet[l4 + 4] << 8) | packet[l4 + 5]
    else:
        return None
    return Quoted(offset, l4, proto, bytes(src), sport, bytes(dst), dport)


def rewrite_icmp_error_out(
    packet: bytes | bytearray, info: Info, q: Quoted, tunnel: bytes, port: int | None
) -> bytes:
    """An ICMP error the host sends about a packet it received from the tunnel, made to come
    from the tunnel address: the outer source and the quoted packet's destination (and its
    port, ``port``, when the flow's port was translated) set to ``tunnel``; checksums of
    the quoted IPv4 header and the ICMP message redone."""
    buf = bytearray(packet)
    if info.version == 4:
        buf[12:16] = tunnel
        buf[q.offset + 16 : q.offset + 20] = tunnel
        ihl = q.l4 - q.offset
        buf[q.offset + 10 : q.offset + 12] = b"\0\0"
        buf[q.offset + 10 : q.offset + 12] = checksum(buf[q.offset : q.offset + ihl]).to_bytes(
            2, "big")
    else:
        buf[8:24] = tunnel
        buf[q.offset + 24 : q.offset + 40] = tunnel
    if port is not None:
        if q.proto in (TCP, UDP):
            buf[q.l4 + 2 : q.l4 + 4] = port.to_bytes(2, "big")
        else:  # an echo reply the host sent: the identifier is the requester's
            buf[q.l4 + 4 : q.l4 + 6] = port.to_bytes(2, "big")
    info.src = tunnel
    fix_checksums(buf, info)
    return bytes(buf)


def rewrite_icmp_error(
    packet: bytes, info: Info, q: Quoted, host: bytes, port: int
) -> bytes:
    """The ICMP error with its destination and the quoted packet's source set back to the
    host's address and port; checksums of the quoted IPv4 header and the ICMP message redone
    (the quoted transport checksum is left alone: it may be truncated anyway)."""
    buf = bytearray(packet)
    if info.version == 4:
        buf[16:20] = host
        buf[q.offset + 12 : q.offset + 16] = host
        ihl = q.l4 - q.offset
        buf[q.offset + 10 : q.offset + 12] = b"\0\0"
        buf[q.offset + 10 : q.offset + 12] = checksum(buf[q.offset : q.offset + ihl]).to_bytes(
            2, "big")
    else:
        buf[24:40] = host
        buf[q.offset + 8 : q.offset + 24] = host
    if q.proto in (TCP, UDP):
        buf[q.l4 : q.l4 + 2] = port.to_bytes(2, "big")
    else:
        buf[q.l4 + 4 : q.l4 + 6] = port.to_bytes(2, "big")
    info.dst = host
    fix_checksums(buf, info)
    return bytes(buf)
