"""The packets sent to the discard devices, read with a packet socket bound to each.

The kernel hands every packet socket listening on a device a clone of each packet the device
sends (dev.c ``dev_queue_xmit_nit``), before the device's own transmit (which for a discard
device frees it: sink.py). A clone shares the packet's data, so nothing is copied in the
sender's context: the one copy is the read's, as for a TUN device. Packets the socket has no
room for are dropped, as on a full TUN queue (``PACKET_STATISTICS`` counts them).

Each packet comes after a ``virtio_net_hdr`` (``PACKET_VNET_HDR``, af_packet.c
``packet_rcv_vnet``), as a TUN device with ``IFF_VNET_HDR`` hands its packets over: the one
way to tell a transport checksum the sender left to the device
(``VIRTIO_NET_HDR_F_NEEDS_CSUM``: the field holds the pseudo-header's sum) from a complete
one. Then the Ethernet header the device's neighbour gave it (``SOCK_RAW``: the kernel
refuses ``PACKET_VNET_HDR`` on ``SOCK_DGRAM``), then the IP packet, a GSO super-packet whole.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import NamedTuple

from ..mmsg import Slots

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
RCVBUF = 16 << 20
RECV_SIZE = 1 << 17  # more than the longest GSO packet (64 KiB) of a sender's TCP
RECV_SLOTS = 64
_STATS = struct.Struct("=II")  # struct tpacket_stats: packets, drops
# struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_VNET_HDR = struct.Struct("=BBHHHH")
_NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
_ETH_HLEN = 14  # the device's (ifb's) link header


class Tapped(NamedTuple):
    """A packet sent to the device: a view of the receive buffer, valid until the next
    receive, and where its transport checksum starts and is stored (relative to that
    start) when the sender left it to the device; ``csum_start`` is -1 when it is
    complete."""

    data: memoryview
    csum_start: int
    csum_offset: int


class PacketTap:
    """A packet socket on one device; :meth:`receive` is non-blocking."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.lost = 0
        self._slots = Slots(RECV_SLOTS, RECV_SIZE)
        self._view = memoryview(self._slots.buffer)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self.sock.bind((device, ETH_P_ALL))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, limit: int) -> list[Tapped]:
        """Up to ``limit`` packets (fewer when the socket is drained)."""
        try:
            received = self._slots.receive(self.sock.fileno(), limit)
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                return []
            raise
        view, buffer = self._view, self._slots.buffer
        out = []
        for offset, size in received:
            start = offset + _VNET_HDR.size + _ETH_HLEN  # the IP header
            if size < _VNET_HDR.size + _ETH_HLEN:  # (an empty packet: counted malformed)
                out.append(Tapped(view[offset:offset], -1, 0))
                continue
            flags, _gso, _hdr, _size, csum, where = _VNET_HDR.unpack_from(buffer, offset)
            data = view[start : offset + size]
            out.append(Tapped(data, csum - _ETH_HLEN, where) if flags & _NEEDS_CSUM
                       else Tapped(data, -1, 0))
        return out

    def dropped(self) -> int:
        """Packets dropped for want of room since the last call (the kernel resets the
        counters when they are read)."""
        with_stats = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        self.lost += _STATS.unpack(with_stats)[1]
        return self.lost

    def close(self) -> None:
        self.sock.close()
