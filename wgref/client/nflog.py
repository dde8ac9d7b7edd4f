"""nfnetlink_log over a plain ``AF_NETLINK`` socket: copies of the packets an nftables
``log group N`` rule sees, read in batches (no verdicts: the packet itself goes on).

The client binds one group for the packets of tunnelled TCP connections, which nftables routes
to the discard device (:mod:`.sink`) after this copy is taken (nft.py). The kernel copies each
packet, a GSO super-packet whole, into a message of its own (``queue-threshold 1``), in the
sending socket's own context (nfnetlink_log.c ``nfulnl_log_packet``); messages the socket has
no room for are lost, as packets are on a full TUN queue.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

from ..mmsg import Slots
from . import netlink as nl

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9

COPY_RANGE = 0xFFFF  # the whole packet (a GSO super-packet's IP length fits in 16 bits)
RCVBUF = 16 << 20
RECV_SIZE = 1 << 17
RECV_SLOTS = 64
_PACKET_KIND = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
_NLMSG = struct.Struct("=IH")
_NLATTR = struct.Struct("=HH")
_BODY = nl.HEADER.size + nl.NFGEN.size


class LogError(OSError):
    pass


class NfLog:
    """One bound log group; :meth:`receive` is non-blocking."""

    def __init__(self, group: int) -> None:
        self.group = group
        self._seq = 0
        self._slots = Slots(RECV_SLOTS, RECV_SIZE)
        self._buffer = self._slots.buffer
        self._view = memoryview(self._buffer)
        self.lost = 0  # times the socket overflowed (ENOBUFS): packets the kernel could not copy
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self._config(nl.attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND)))
            self._config(
                nl.attr(NFULA_CFG_MODE, struct.pack(">IBx", COPY_RANGE, NFULNL_COPY_PACKET)),
                nl.attr(NFULA_CFG_NLBUFSIZ, struct.pack(">I", RECV_SIZE)),
                nl.attr(NFULA_CFG_QTHRESH, struct.pack(">I", 1)),
                nl.attr(NFULA_CFG_TIMEOUT, struct.pack(">I", 1)),
            )
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _config(self, *attrs: bytes) -> None:
        self._seq += 1
        payload = nl.nfgen(socket.AF_UNSPEC, self.group) + b"".join(attrs)
        kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        self.sock.send(nl.message(kind, nl.NLM_F_REQUEST | nl.NLM_F_ACK, self._seq, payload))
        ready, _, _ = select.select([self.sock], [], [], 5.0)
        if not ready:
            raise LogError(errno.ETIMEDOUT, "no answer from nfnetlink_log")
        for kind, _flags, seq, body in nl.messages(self.sock.recv(65536)):
            if kind == nl.NLMSG_ERROR and seq == self._seq:
                code = nl.error_code(body)
                if code:
                    raise LogError(code, f"NFLOG group {self.group}: {os.strerror(code)}")
                return
        raise LogError(errno.EPROTO, "unexpected answer from nfnetlink_log")

    def receive(self, limit: int) -> list[memoryview]:
        """Up to ``limit`` logged packets, each a view of the receive buffer that stays valid
        until the next receive."""
        out: list[memoryview] = []
        buffer = self._buffer
        try:
            received = self._slots.receive(self.sock.fileno(), limit)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # overflowed: the lost copies are not coming
                self.lost += 1
                return out
            raise
        for offset, size in received:
            size += offset
            while offset + _NLMSG.size <= size:
                length, kind = _NLMSG.unpack_from(buffer, offset)
                if length < nl.HEADER.size or offset + length > size:
                    break
                if kind == _PACKET_KIND:
                    payload = self._payload(offset + _BODY, offset + length)
                    if payload is not None:
                        out.append(payload)
                offset += (length + 3) & ~3
        return out

    def _payload(self, offset: int, end: int) -> memoryview | None:
        buffer = self._buffer
        while offset + 4 <= end:
            length, kind = _NLATTR.unpack_from(buffer, offset)
            if length < 4 or offset + length > end:
                return None
            if kind & nl.NLA_TYPE_MASK == NFULA_PAYLOAD:
                return self._view[offset + 4 : offset + length]
            offset += (length + 3) & ~3
        return None

    def close(self) -> None:
        self.sock.close()
