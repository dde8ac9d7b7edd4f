"""Pure packet work shared by the I/O shells: Internet checksums (RFC 1071), and the TUN
offloads that let one read or write carry many TCP segments. No I/O here: bytes in, bytes out.

Offloads (Linux ``Documentation/networking/tuntap.rst``, ``include/uapi/linux/virtio_net.h``).
With IFF_VNET_HDR every frame read from or written to a TUN starts with a 10-byte
``virtio_net_hdr``; with TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel may
hand over

* packets whose transport checksum is left for us to finish (``NEEDS_CSUM``: the field holds
  the pseudo-header sum; fold the bytes from ``csum_start`` and store the complement at
  ``csum_start + csum_offset``), and
* TCP "super-packets" of up to 64 KiB (``GSO_TCPV4/6``) that :func:`split_frame` cuts into
  ``gso_size`` segments, as the kernel's own TSO fallback would,

so a single read may give dozens of packets. On the way in, :func:`coalesce` merges
consecutive in-order segments of a TCP flow into one such super-packet, so the kernel runs its
TCP receive path once per batch instead of once per segment (GRO done in userspace). Every
other packet is written with an all-zero header.
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass

# The [fast] extra: the payload sums of a TSO frame's segments in one numpy pass. numpy is
# imported on the first TSO frame, not when a shell that never sees one starts.
_HAVE_NUMPY = importlib.util.find_spec("numpy") is not None

__all__ = [
    "MAX_IP_LENGTH",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VNET_HDR",
    "VNET_HDR_LEN",
    "ZERO_VNET_HDR",
    "checksum",
    "coalesce",
    "split_frame",
]

# virtio_net_hdr (linux/virtio_net.h): flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset. A legacy header such as TUN's is in the host's byte order (no TUNSETVNETLE/BE).
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_ECN = 0x80
MAX_IP_LENGTH = 0xFFFF  # an IPv4 total length / IPv6 payload length (no jumbograms)

# TCP header flags (RFC 9293 3.1).
_FIN, _SYN, _RST, _PSH, _ACK, _URG, _ECE, _CWR = 1, 2, 4, 8, 16, 32, 64, 128
_PROTO_TCP = 6


# ----------------------------------------------------------------- checksums (RFC 1071)

# _sum16 folds before its final `%`: 2**(16k) == 1 (mod 0xFFFF), so adding the two parts of a
# number split at a multiple of 16 bits keeps its value mod 0xFFFF, and a `%` of a few hundred
# bits is much cheaper in CPython than one of a whole 1400-byte number (it divides digit by
# digit). Splits at multiples of 240 bits (also whole 30-bit digits) are the cheapest; measured
# 1.8 us instead of 2.6 us for 1368 bytes. Larger numbers are halved first.
_FOLD_LARGE = tuple(((1 << bits) - 1, bits) for bits in (92160, 46080, 23040, 11520))
_FOLD_5760 = (1 << 5760) - 1
_FOLD_2880 = (1 << 2880) - 1


def _sum16(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of ``data`` as big-endian 16-bit words (an odd length is
    padded with a zero byte), reduced mod 0xFFFF: ``0`` stands for both 0x0000 and 0xFFFF."""
    size = len(data)
    value = int.from_bytes(data, "big")
    if size & 1:
        value <<= 8
    if size > 1440:
        for mask, bits in _FOLD_LARGE:
            if value >> bits:
                value = (value >> bits) + (value & mask)
    if size > 720:
        value = (value >> 5760) + (value & _FOLD_5760)
    if size > 360:
        value = (value >> 2880) + (value & _FOLD_2880)
    return value % 0xFFFF


def _segment_sums_python(payload: memoryview, mss: int) -> list[int]:
    """``_sum16`` of each ``mss``-byte piece of ``payload`` (the last may be shorter)."""
    return [_sum16(payload[offset : offset + mss]) for offset in range(0, len(payload), mss)]


# Below this many whole segments numpy's fixed cost per call (a few microseconds) is more
# than it saves (measured: 1368-byte segments, 1 whole: 3.2 us pure-Python, 4.0 us numpy;
# 2: 5.6 and 4.2; 47: 113 and 10).
_NUMPY_MIN_SEGMENTS = 2


def _segment_sums_numpy(payload: memoryview, mss: int) -> list[int]:
    """The same as :func:`_segment_sums_python`, every whole segment in one numpy pass.

    The words are summed as little-endian 32-bit (or, for an mss that is not a multiple of 4,
    16-bit) numbers: 2**16 == 1 (mod 0xFFFF), so a 32-bit word adds the same as its two
    halves, and a ones' complement sum is independent of byte order up to a swap of its two
    bytes (RFC 1071 2.(B)); swapping the bytes of a value mod 0xFFFF is multiplying it by
    256. A row sums at most 2**14 32-bit words (or 2**15 16-bit ones): times 256 it is
    still far below 2**64."""
    full = len(payload) // mss
    if mss & 1 or full < _NUMPY_MIN_SEGMENTS:
        return _segment_sums_python(payload, mss)
    import numpy  # see _HAVE_NUMPY

    width = 2 if mss & 2 else 4
    words = numpy.frombuffer(payload, dtype=f"<u{width}", count=full * mss // width)
    sums = words.reshape(full, mss // width).sum(axis=1, dtype=numpy.uint64)
    result: list[int] = (sums * 256 % 0xFFFF).tolist()
    if full * mss < len(payload):
        result.append(_sum16(payload[full * mss :]))
    return result


_segment_sums = _segment_sums_numpy if _HAVE_NUMPY else _segment_sums_python


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data`` plus ``initial`` (a partial sum such as a
    pseudo-header's): the complement of the ones' complement sum, exactly as a word-by-word
    sum gives it (0 for data that already carries a valid checksum; a sum of non-zero words
    is never +0). UDP writes 0 as 0xFFFF (RFC 768): ``checksum(...) or 0xFFFF``."""
    total = (_sum16(data) + initial) % 0xFFFF
    if total == 0 and (initial or bytes(data).strip(b"\0")):
        return 0
    return 0xFFFF - total


def _completed(packet: bytes | bytearray, start: int, offset: int) -> bytes:
    """NEEDS_CSUM: the checksum field's value once the bytes from ``start`` (the field
    already holds the pseudo-header sum) are folded in, for ``start + offset``."""
    if start >= len(packet) or start + offset + 2 > len(packet):
        raise ValueError("checksum offsets outside the packet")
    value = checksum(memoryview(packet)[start:]) or 0xFFFF  # never UDP's "no checksum"
    return value.to_bytes(2, "big")


def _finish_checksum(packet: bytes, start: int, offset: int) -> bytes:
    """:func:`finish_checksum` of a copy."""
    at = start + offset
    return packet[:at] + _completed(packet, start, offset) + packet[at + 2 :]


def finish_checksum(packet: bytearray, start: int, offset: int) -> None:
    """Complete, in place, a transport checksum the sender left to the device
    (``VIRTIO_NET_HDR_F_NEEDS_CSUM``: from ``start``, stored at ``start + offset``)."""
    at = start + offset
    packet[at : at + 2] = _completed(packet, start, offset)


# ----------------------------------------------------------------- TSO: split on read

_split_structs: dict[tuple[int, int, int], struct.Struct] = {}


def _split_struct(version: int, tcp_off: int, th: int) -> struct.Struct:
    """The header of one segment as a struct over the fields that change (lengths, IPv4 id
    and checksum, TCP sequence, flags and checksum) and the constant bytes between them."""
    key = (version, tcp_off, th)
    layout = _split_structs.get(key)
    if layout is None:
        # IPv4: version..TOS, length, id, flags..protocol, checksum, addresses..TCP ports;
        # IPv6: version..flow label, payload length, next header..TCP ports.
        ip = f"2sHH4sH{tcp_off - 8}s" if version == 4 else f"4sH{tcp_off - 2}s"
        layout = struct.Struct(f">{ip}I5sB2sH{th - tcp_off - 18}s")
        _split_structs[key] = layout
    return layout


def _split_tcp(frame: bytes | bytearray | memoryview, mss: int, tcp_off: int) -> list[bytes]:
    """Cut a TCP super-packet into segments of ``mss`` payload bytes, as the kernel's
    tcp_gso_segment would: IP lengths, IPv4 ids (+1 each) and checksums, TCP sequence
    numbers; FIN and PSH on the last segment only, CWR on the first only; TCP checksums."""
    if tcp_off + 20 > len(frame):
        raise ValueError("TSO frame shorter than its headers")
    th = tcp_off + ((frame[tcp_off + 12] >> 4) << 2)
    size = len(frame)
    if th > size or th - tcp_off < 20 or mss <= 0:
        raise ValueError("bad TSO frame")
    packet = bytes(frame[:th])  # the headers; the payload is only read, through a view
    version = packet[0] >> 4
    layout = _split_struct(version, tcp_off, th)
    seq0 = int.from_bytes(packet[tcp_off + 4 : tcp_off + 8], "big")
    flags = packet[tcp_off + 13]
    # Constant parts of the segment headers, and the partial sums that do not change.
    ack_off = packet[tcp_off + 8 : tcp_off + 13]  # acknowledgment number + data offset
    window = packet[tcp_off + 14 : tcp_off + 16]
    tail = packet[tcp_off + 18 : th]  # urgent pointer + options
    # Words of the TCP header that do not change: ports, ack, data offset, window, urgent
    # pointer, options (the flags byte is zero here and added per segment).
    ports = packet[tcp_off : tcp_off + 4]
    tcp_const = _sum16(ports + ack_off + b"\0" + window + tail)
    if version == 4:
        pseudo = _sum16(packet[12:20]) + _PROTO_TCP
        ip_a, ip_b, ip_c = packet[0:2], packet[6:10], packet[12 : tcp_off + 4]
        ip_const = _sum16(ip_a + bytes(4) + ip_b + bytes(2) + packet[12:tcp_off])
        ident = int.from_bytes(packet[4:6], "big")
    else:
        pseudo = _sum16(packet[8:40]) + _PROTO_TCP
        ip_a, ip_c = packet[0:4], packet[6 : tcp_off + 4]
        ip_const = ident = 0
    pack = layout.pack
    payload = memoryview(frame)[th:]
    total = len(payload)
    # Per segment only the lengths, sequence number, flags, IPv4 id and the payload's own sum
    # differ: the payload sums are taken for all segments at once.
    sums = _segment_sums(payload, mss)
    last = len(sums) - 1
    tcp_fixed = pseudo + th - tcp_off + tcp_const
    segments: list[bytes] = []
    for index, payload_sum in enumerate(sums):
        offset = index * mss
        length = mss if index < last else total - offset
        seg_flags = flags
        if index < last:
            seg_flags &= ~(_FIN | _PSH)
        if index:
            seg_flags &= ~_CWR
        seq = (seq0 + offset) & 0xFFFFFFFF
        tcp_sum = tcp_fixed + length + (seq >> 16) + (seq & 0xFFFF) + seg_flags + payload_sum
        tcp_csum = 0xFFFF - tcp_sum % 0xFFFF
        if version == 4:
            ip_length = th + length
            ip_id = (ident + index) & 0xFFFF
            ip_csum = 0xFFFF - (ip_const + ip_length + ip_id) % 0xFFFF
            header = pack(
                ip_a, ip_length, ip_id, ip_b, ip_csum, ip_c,
                seq, ack_off, seg_flags, window, tcp_csum, tail,
            )  # fmt: skip
        else:
            header = pack(
                ip_a, th - 40 + length, ip_c, seq, ack_off, seg_flags, window, tcp_csum, tail
            )
        segments.append(header + payload[offset : offset + length])
    return segments


def split_frame(frame: bytes) -> list[bytes]:
    """The IP packets in one frame read from a TUN with IFF_VNET_HDR (see the module doc).

    Raises ValueError for a frame we cannot handle (an offload we did not ask for)."""
    if len(frame) <= VNET_HDR_LEN:
        raise ValueError("frame shorter than its virtio_net_hdr")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    gso = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            packet = _finish_checksum(packet, csum_start, csum_offset)
        return [packet]
    if gso in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        # csum_start is where the TCP header begins (after any IPv4 options or IPv6 extension
        # headers): the kernel sets it for every GSO frame it hands out.
        if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or csum_start < 20:
            raise ValueError("TSO frame without checksum offsets")
        return _split_tcp(packet, gso_size, csum_start)
    raise ValueError(f"unexpected GSO type {gso_type}")


# ----------------------------------------------------------------- GRO: coalesce on write


_V4_ID_SEQ = struct.Struct(">4xH18xI")  # IPv4 id and TCP sequence (20-byte IPv4 header)
_V6_SEQ = struct.Struct(">44xI")  # TCP sequence after a 40-byte IPv6 header


@dataclass(slots=True)
class _Run:
    """Consecutive in-order segments of one TCP flow that can become one super-packet."""

    first: bytes  # the first segment, whole (its headers become the super-packet's)
    tcp_off: int
    th: int  # end of the TCP header
    gso_size: int  # payload bytes of the first segment; later ones match, the last may be less
    next_seq: int
    next_id: int
    payloads: list[memoryview]
    size: int  # payload bytes so far
    # What must be equal along a run, as in the kernel's GRO (inet_gro_receive,
    # tcp_gro_receive): IPv4 TOS, DF, TTL (IPv6 version, traffic class, flow label; hop limit
    # is compared on its own), the acknowledgment number and data offset, the window, the
    # urgent pointer and the options (timestamps included).
    ip_fields: bytes
    ack: bytes
    window: bytes
    tail: bytes
    closed: bool = False  # a short or PSH segment ends the run
    last_flags: int = _ACK


def _new_run(packet: bytes, tcp_off: int, th: int, length: int, seq: int, ident: int) -> _Run:
    ip_fields = packet[6:9] if tcp_off == 20 else packet[0:4]
    return _Run(
        packet, tcp_off, th, length, (seq + length) & 0xFFFFFFFF, (ident + 1) & 0xFFFF,
        [memoryview(packet)[th:]], length, ip_fields,
        packet[tcp_off + 8 : tcp_off + 13], packet[tcp_off + 14 : tcp_off + 16],
        packet[tcp_off + 18 : th],
    )  # fmt: skip


def _super_packet(run: _Run) -> bytes:
    """vnet header + the run's first header (lengths, IPv4 checksum, PSH fixed) + payloads."""
    header, gso_type = super_header(run)
    vnet = VNET_HDR.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, run.th, run.gso_size, run.tcp_off, 16
    )
    return b"".join((vnet, header, *run.payloads))


def super_header(run: _Run) -> tuple[bytearray, int]:
    """The IP and TCP headers of the run's super-packet (its first segment's, with the
    lengths of the whole, the IPv4 checksum, PSH of the last segment and the partial TCP
    checksum) and its virtio GSO type."""
    first, tcp_off, th = run.first, run.tcp_off, run.th
    header = bytearray(first[:th])
    ip_length = th + run.size
    if tcp_off == 20:
        header[2:4] = ip_length.to_bytes(2, "big")
        header[10:12] = b"\0\0"
        header[10:12] = checksum(header[:20]).to_bytes(2, "big")
        pseudo = _sum16(first[12:20]) + _PROTO_TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        header[4:6] = (ip_length - 40).to_bytes(2, "big")
        pseudo = _sum16(first[8:40]) + _PROTO_TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    header[tcp_off + 13] |= run.last_flags & _PSH
    # CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum and the kernel
    # adds the bytes from csum_start if it ever needs the full checksum (e.g. forwarding).
    partial = (pseudo + ip_length - tcp_off) % 0xFFFF
    header[tcp_off + 16 : tcp_off + 18] = partial.to_bytes(2, "big")
    return header, gso_type


def coalesce(packets: list[bytes]) -> list[bytes]:
    """Frames (virtio_net_hdr + packet) to write for ``packets``, merging in-order TCP segments
    of a flow into super-packets (see the module doc). Order within a flow is kept.

    Segments are merged only as the kernel's GRO would: ACK (or ACK+PSH, which ends a run)
    segments with data, IPv4 without options or fragmentation or IPv6 without extension
    headers, equal headers but for the sequence number and IPv4 id (which must follow on),
    equal sizes except a shorter last one, up to a 64 KiB IP packet. The TCP checksums of
    merged segments are not checked: they come out of an authenticated WireGuard session, so
    they guard against nothing the AEAD tag does not (the kernel's WireGuard marks decrypted
    packets CHECKSUM_UNNECESSARY for the same reason). Everything else, including a segment
    on its own, is written unchanged with a zero header and checked by the kernel as usual."""
    if len(packets) < 2:
        return [ZERO_VNET_HDR + p for p in packets]
    frames: list[bytes] = []
    for item in runs(packets):
        if isinstance(item, bytes):
            frames.append(ZERO_VNET_HDR + item)
        elif len(item.payloads) == 1:
            frames.append(ZERO_VNET_HDR + item.first)
        else:
            frames.append(_super_packet(item))
    return frames


def runs(packets: list[bytes]) -> list[_Run | bytes]:
    """:func:`coalesce` before the frames are built: each packet left alone, or a run of
    segments to merge (its ``first`` segment, ``payloads`` and ``gso_size``; a run of one
    segment is that segment alone), in the order of their first packets."""
    items: list[_Run | bytes] = []
    runs: dict[bytes, _Run] = {}
    v4_id_seq, v6_seq = _V4_ID_SEQ.unpack_from, _V6_SEQ.unpack_from
    for packet in packets:
        size = len(packet)
        first = packet[0]
        if first == 0x45:  # IPv4 without options
            if size < 40 or packet[9] != _PROTO_TCP or packet[6] & 0x3F or packet[7]:
                items.append(packet)  # not TCP, or a fragment (MF or an offset)
                continue
            tcp_off = 20
            key = packet[12:24]  # addresses and ports
        elif first >> 4 == 6:
            if size < 60 or packet[6] != _PROTO_TCP:
                items.append(packet)  # not TCP right after the fixed header
                continue
            tcp_off = 40
            key = packet[8:44]
        else:
            items.append(packet)
            continue
        th = tcp_off + ((packet[tcp_off + 12] >> 4) << 2)
        flags = packet[tcp_off + 13]
        length = size - th
        run = runs.get(key)
        if length <= 0 or flags | _PSH != _ACK | _PSH or th < tcp_off + 20:
            # Not data, or SYN/FIN/RST/URG/ECE/CWR: written alone, after what came before.
            if run is not None:
                run.closed = True
            items.append(packet)
            continue
        if tcp_off == 20:
            ident, seq = v4_id_seq(packet)
        else:
            ident, seq = run.next_id if run is not None else 0, v6_seq(packet)[0]
        if (
            run is None
            or run.closed
            or seq != run.next_seq
            or ident != run.next_id
            or length > run.gso_size
            or th != run.th
            or th + run.size + length > MAX_IP_LENGTH + tcp_off - 20
            or not packet.startswith(run.ip_fields, 6 if tcp_off == 20 else 0)
            or packet[1 if tcp_off == 20 else 7] != run.first[1 if tcp_off == 20 else 7]
            or not packet.startswith(run.ack, tcp_off + 8)
            or not packet.startswith(run.window, tcp_off + 14)
            or not packet.startswith(run.tail, tcp_off + 18)
        ):
            run = runs[key] = _new_run(packet, tcp_off, th, length, seq, ident)
            items.append(run)
        else:
            run.payloads.append(memoryview(packet)[th:])
            run.size += length
            run.next_seq = (seq + length) & 0xFFFFFFFF
            run.next_id = (ident + 1) & 0xFFFF
        run.last_flags = flags
        if length < run.gso_size or flags & _PSH:
            run.closed = True
    return items
