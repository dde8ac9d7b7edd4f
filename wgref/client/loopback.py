"""Merged TCP packets for the host itself, handed to ``lo`` (see :class:`LoopbackInjector`)."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable, Sequence
from typing import ClassVar

from ..udp import SO_MARK

log = logging.getLogger("wgref.client")

SEND_WAIT = 0.5  # how long an injection waits for room in a full send buffer


def send_waiting(sock: socket.socket | int, send: Callable[[], object],
                 wait: float = SEND_WAIT) -> None:
    """``send()`` on the non-blocking ``sock`` (a socket or a descriptor), once more after up
    to ``wait`` s for room if its buffer is full. (A socket with a timeout would poll before
    every send: one more syscall per injected packet.) Raises OSError as the send does."""
    try:
        send()
    except BlockingIOError:
        select.select([], [sock], [], wait)
        send()


class LoopbackInjector:
    """Merged TCP packets for the host itself, received through ``lo`` from an
    ``AF_PACKET`` socket with ``PACKET_VNET_HDR``: the kernel takes them as GSO packets with
    their checksum partial (CHECKSUM_PARTIAL, trusted), as from a device with offloads, so
    neither the client nor the kernel sums 64 KiB. They skip the output hooks: a flow's
    first answer (never merged) goes through the raw socket, which marks its conntrack
    entry; they carry the client's packet mark, with which the client's ``prerouting``
    chain marks an entry they start (nft.py). Not used where IPv4 reverse-path filtering is
    strict on ``lo`` (it would drop them: the source is not routed through ``lo``)."""

    LINK_HEADER = 14  # lo's (Ethernet) header, which the vnet header's offsets count
    SOL_PACKET = 263
    PACKET_VNET_HDR = 15
    ETHERTYPE: ClassVar[dict[int, bytes]] = {4: b"\x08\x00", 6: b"\x86\xdd"}

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._link = bytes(12)  # lo's link header: zero addresses, then the EtherType

    @classmethod
    def open(cls, mark: int) -> LoopbackInjector | None:
        """``mark``: the packets' mark (SO_MARK), seen by the hooks they go through on the
        way in."""
        if cls._strict_rp_filter():
            log.info("rp_filter is strict on lo: merged packets are injected with their "
                     "checksums computed")
            return None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            log.debug("no AF_PACKET socket: %s", exc)
            return None
        try:
            sock.setsockopt(cls.SOL_PACKET, cls.PACKET_VNET_HDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            sock.bind(("lo", 0))
        except OSError as exc:
            log.debug("no PACKET_VNET_HDR or SO_MARK on lo: %s", exc)
            sock.close()
            return None
        sock.setblocking(False)
        return cls(sock)

    @staticmethod
    def _strict_rp_filter() -> bool:
        values = []
        for name in ("all", "lo"):
            try:
                with open(f"/proc/sys/net/ipv4/conf/{name}/rp_filter") as f:
                    values.append(int(f.read().strip() or 0))
            except (OSError, ValueError):
                values.append(0)
        return max(values) == 1

    def send(self, vnet: bytes, header: bytes | bytearray,
             payloads: Sequence[memoryview]) -> bool:
        """One packet: ``header`` then ``payloads``, gathered by the kernel (no copy here)."""
        link = self._link + self.ETHERTYPE[header[0] >> 4]
        parts: list[bytes | bytearray | memoryview] = [vnet, link, header, *payloads]
        try:
            send_waiting(self.sock, lambda: self.sock.sendmsg(parts))
        except OSError as exc:
            log.debug("inject through lo: %s", exc)
            return False
        return True
