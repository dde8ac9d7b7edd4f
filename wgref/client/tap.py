"""The packets sent to the discard device, read with a packet socket bound to it.

The kernel hands every packet socket listening on a device a clone of each packet the device
sends (dev.c ``dev_queue_xmit_nit``), before the device's own transmit (which for the discard
device frees it: sink.py). A clone shares the packet's data, so nothing is copied in the
sender's context: the one copy is the read's, as for a TUN device. Bound with ``SOCK_DGRAM``
a packet comes without its link header: the IP packet, a GSO super-packet whole. Packets the
socket has no room for are dropped, as on a full TUN queue (``PACKET_STATISTICS`` counts
them).
"""

from __future__ import annotations

import errno
import socket
import struct

from ..mmsg import Slots

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
RCVBUF = 16 << 20
RECV_SIZE = 1 << 17  # more than the longest GSO packet (64 KiB) of a sender's TCP
RECV_SLOTS = 64
_STATS = struct.Struct("=II")  # struct tpacket_stats: packets, drops


class PacketTap:
    """A packet socket on one device; :meth:`receive` is non-blocking."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.lost = 0
        self._slots = Slots(RECV_SLOTS, RECV_SIZE)
        self._view = memoryview(self._slots.buffer)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((device, ETH_P_ALL))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, limit: int) -> list[memoryview]:
        """Up to ``limit`` packets, each a view of the receive buffer that stays valid until
        the next receive."""
        try:
            received = self._slots.receive(self.sock.fileno(), limit)
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                return []
            raise
        view = self._view
        return [view[offset : offset + size] for offset, size in received]

    def dropped(self) -> int:
        """Packets dropped for want of room since the last call (the kernel resets the
        counters when they are read)."""
        with_stats = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        self.lost += _STATS.unpack(with_stats)[1]
        return self.lost

    def close(self) -> None:
        self.sock.close()
