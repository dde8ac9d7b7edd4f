"""TCP segmentation and coalescing for the client, on whole IP packets.

Outbound, a TCP super-packet queued whole (``NFQA_CFG_F_GSO``) is cut into segments that fit
the tunnel (:func:`segment`); inbound, in-order segments of a local TCP flow are merged into
one packet before injection (:func:`merge`), so the host's TCP receive path and the raw
socket run once per batch instead of once per segment. The packet work itself is the TUN
offload code (wgref/offload.py: TSO split, userspace GRO) shared with the interface.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from .. import offload as shared


def segment(packet: bytes | bytearray | memoryview, tcp_off: int,
            payload_size: int) -> list[bytes]:
    """The TCP super-packet ``packet`` (its TCP header at ``tcp_off``) as segments of at most
    ``payload_size`` payload bytes each, with lengths, IPv4 ids, sequence numbers, flags and
    both checksums set as the kernel's TSO fallback would (the checksum fields of ``packet``
    are ignored). Raises ValueError for a malformed packet."""
    return shared._split_tcp(packet, payload_size, tcp_off)


class Merged(NamedTuple):
    """A packet to inject: one left alone (``gso_size`` 0), or in-order segments of a flow
    merged, kept as their pieces so that no 64 KiB copy is made here (the socket gathers
    them): ``header`` (the IP and TCP headers of the whole: lengths set, checksums not
    valid and to be set) and the segments' ``payloads`` of ``gso_size`` bytes each (the last
    may be shorter)."""

    packet: bytes  # the packet, or a merged packet's first segment (whole, for parsing)
    gso_size: int = 0
    header: bytes = b""
    payloads: tuple[memoryview, ...] = ()

    def joined(self) -> bytes:
        """The merged packet in one piece (the packet itself when not merged)."""
        return b"".join((self.header, *self.payloads)) if self.gso_size else self.packet


def merge(packets: list[bytes]) -> list[Merged]:
    """``packets`` with the in-order TCP data segments of each flow merged (as the shared
    userspace GRO, wgref/offload.py :func:`~wgref.offload.coalesce`, merges them); order
    within a flow is kept."""
    out: list[Merged] = []
    for item in shared.runs(packets):
        if isinstance(item, bytes):
            out.append(Merged(item))
        elif len(item.payloads) == 1:
            out.append(Merged(item.first))
        else:
            header, _gso_type = shared.super_header(item)
            out.append(Merged(item.first, item.gso_size, bytes(header), tuple(item.payloads)))
    return out


def partial_tcp(buf: bytearray, tcp_off: int) -> None:
    """For a packet handed over with ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` (CHECKSUM_PARTIAL): the
    IPv4 header checksum, and in the TCP checksum field the pseudo-header sum only
    (uncomplemented), as a device with checksum offload expects it."""
    if buf[0] >> 4 == 4:
        end = (buf[2] << 8) | buf[3]
        buf[10:12] = b"\0\0"
        buf[10:12] = (0xFFFF - _sum16(memoryview(buf)[:tcp_off])).to_bytes(2, "big")
        addresses = memoryview(buf)[12:20]
    else:
        end = 40 + ((buf[4] << 8) | buf[5])
        addresses = memoryview(buf)[8:40]
    pseudo = (_sum16(addresses) + 6 + end - tcp_off) % 0xFFFF
    buf[tcp_off + 16 : tcp_off + 18] = pseudo.to_bytes(2, "big")


def vnet_header(version: int, tcp_off: int, th: int, gso_size: int, link: int = 0) -> bytes:
    """The virtio_net_hdr of a merged TCP packet: checksum left partial, GSO of
    ``gso_size``-byte segments; ``link`` bytes of link-layer header come first (the
    offsets count them)."""
    gso_type = (shared.VIRTIO_NET_HDR_GSO_TCPV4 if version == 4
                else shared.VIRTIO_NET_HDR_GSO_TCPV6)
    return shared.VNET_HDR.pack(shared.VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, link + th,
                                gso_size, link + tcp_off, 16)


@functools.lru_cache(maxsize=64)
def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _sum16(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of ``data`` as big-endian 16-bit words, mod 0xFFFF, for
    packets of up to 64 KiB: 2**16 == 1 (mod 0xFFFF), so the number's two halves (split at a
    multiple of 240 bits: whole 16-bit words and whole 30-bit CPython digits) add up to the
    same value mod 0xFFFF; halving until a few hundred bits are left is linear, where one
    ``%`` of the whole number is not (measured 160 us instead of 370 us for 64 KiB)."""
    size = len(data)
    value = int.from_bytes(data, "big")
    if size & 1:
        value <<= 8
        size += 1
    bits = size * 8
    while bits > 2880:
        half = (bits // 2 + 239) // 240 * 240
        value = (value >> half) + (value & _mask(half))
        bits = half + 1
    return value % 0xFFFF


def finish_tcp(buf: bytearray, tcp_off: int) -> None:
    """Set the IPv4 header checksum (IPv4) and the TCP checksum of the TCP packet in ``buf``
    (its fields' old contents do not matter; the lengths must be right)."""
    if buf[0] >> 4 == 4:
        end = (buf[2] << 8) | buf[3]
        buf[10:12] = b"\0\0"
        buf[10:12] = (0xFFFF - _sum16(memoryview(buf)[:tcp_off])).to_bytes(2, "big")
        addresses = memoryview(buf)[12:20]
    else:
        end = 40 + ((buf[4] << 8) | buf[5])
        addresses = memoryview(buf)[8:40]
    # the pseudo header (RFC 9293 3.1): addresses, protocol, TCP length
    pseudo = _sum16(addresses) + 6 + end - tcp_off
    buf[tcp_off + 16 : tcp_off + 18] = b"\0\0"
    total = (_sum16(memoryview(buf)[tcp_off:end]) + pseudo) % 0xFFFF
    buf[tcp_off + 16 : tcp_off + 18] = (0xFFFF - total).to_bytes(2, "big")


_TIMESTAMPS_ONLY = b"\x01\x01\x08\x0a"  # NOP, NOP, timestamps: Linux's only option on ACKs
_SERIAL_HALF = 1 << 31
_PURE_ACK_MAX = 40 + 32  # the longest pure ACK: IPv6, TCP with timestamps


def _ack_of(packet: bytes) -> tuple[bytes, int] | tuple[bytes, None] | None:
    """For a TCP packet: its flow (addresses and ports) and, for a pure ACK, its
    acknowledgment number (None for any other TCP packet); None for the rest. A pure ACK has
    flags ACK alone, no payload and no option but timestamps (so it carries no SACK block)."""
    first = packet[0] if packet else 0
    if first == 0x45:  # IPv4 without options
        if len(packet) < 40 or packet[9] != 6 or packet[6] & 0x3F or packet[7]:
            return None
        tcp_off, flow = 20, packet[12:24]
    elif first >> 4 == 6:
        if len(packet) < 60 or packet[6] != 6:
            return None
        tcp_off, flow = 40, packet[8:44]
    else:
        return None
    th = tcp_off + ((packet[tcp_off + 12] >> 4) << 2)
    options = packet[tcp_off + 20 : th]
    if (len(packet) != th or packet[tcp_off + 13] != 0x10
            or (options and (len(options) != 12 or options[:4] != _TIMESTAMPS_ONLY))):
        return flow, None
    return flow, int.from_bytes(packet[tcp_off + 8 : tcp_off + 12], "big")


def thin_acks(packets: list[bytes]) -> list[bytes]:
    """``packets`` without the pure ACKs that a later pure ACK of the same flow among them
    supersedes with a higher acknowledgment number (sch_cake.c ``cake_ack_filter``, its
    conservative mode, is the model): the receiver's TCP takes one ACK for what several
    acknowledged, and nothing it would act on is lost. Kept: ACKs with equal numbers
    (duplicate ACKs, window updates), anything with a SACK block, data or another flag, and
    an ACK followed by any other packet of its flow."""
    last: dict[bytes, tuple[int, int]] = {}  # flow -> (index, number) of its latest pure ACK
    superseded: set[int] = set()
    for index, packet in enumerate(packets):
        if len(packet) > _PURE_ACK_MAX and not last:
            continue  # data, and no ACK before it to keep (the common case: a quick test)
        found = _ack_of(packet)
        if found is None:
            continue
        flow, number = found
        if number is None:
            last.pop(flow, None)
            continue
        before = last.get(flow)
        if before is not None and 0 < (number - before[1]) % (1 << 32) < _SERIAL_HALF:
            superseded.add(before[0])
        last[flow] = (index, number)
    if not superseded:
        return packets
    return [packet for index, packet in enumerate(packets) if index not in superseded]
