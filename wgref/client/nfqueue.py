"""NFQUEUE over a plain ``AF_NETLINK`` socket (nfnetlink_queue), no C library needed.

The client binds one queue, receives whole packets (``NFQNL_COPY_PACKET``; checksums are
completed and GSO packets segmented by the kernel because ``NFQA_CFG_F_GSO`` is not asked
for) and answers each with a verdict, optionally setting the packet mark.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from dataclasses import dataclass

from . import netlink as nl

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_PAYLOAD = 10

NF_DROP = 0
NF_ACCEPT = 1

HOOK_PREROUTING = 0
HOOK_INPUT = 1
HOOK_FORWARD = 2
HOOK_OUTPUT = 3

_PACKET_HDR = struct.Struct(">IHB")
_BE32 = struct.Struct(">I")
_VERDICT = struct.Struct(">II")
RCVBUF = 8 << 20


class QueueError(OSError):
    pass


@dataclass(frozen=True, slots=True)
class QueuedPacket:
    packet_id: int
    hook: int
    payload: bytes
    mark: int
    indev: int
    outdev: int


class NfQueue:
    """One bound queue; ``receive`` is non-blocking, verdicts are batched until ``flush``."""

    def __init__(self, number: int, maxlen: int = 4096) -> None:
        self.number = number
        self._seq = 0
        self._pending: list[bytes] = []
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_NO_ENOBUFS, 1)
            self._config(nl.attr(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND, 0)))
            self._config(
                nl.attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0xFFFF, NFQNL_COPY_PACKET)),
                nl.attr(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(maxlen)),
            )
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _config(self, *attrs: bytes) -> None:
        """Send a config message and wait (bounded) for its ACK."""
        self._seq += 1
        payload = nl.nfgen(socket.AF_UNSPEC, self.number) + b"".join(attrs)
        kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        self.sock.send(nl.message(kind, nl.NLM_F_REQUEST | nl.NLM_F_ACK, self._seq, payload))
        ready, _, _ = select.select([self.sock], [], [], 5.0)
        if not ready:
            raise QueueError(errno.ETIMEDOUT, "no answer from nfnetlink_queue")
        data = self.sock.recv(65536)
        for kind, _flags, seq, body in nl.messages(data):
            if kind == nl.NLMSG_ERROR and seq == self._seq:
                code = nl.error_code(body)
                if code:
                    raise QueueError(code, f"NFQUEUE {self.number}: {os.strerror(code)}")
                return
        raise QueueError(errno.EPROTO, "unexpected answer from nfnetlink_queue")

    def receive(self, limit: int) -> list[QueuedPacket]:
        """Up to ``limit`` queued packets (fewer when the socket is drained)."""
        out: list[QueuedPacket] = []
        recv = self.sock.recv
        for _ in range(limit):
            try:
                data = recv(262144)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            for kind, _flags, _seq, body in nl.messages(data):
                if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    continue
                attrs = nl.attributes(body[nl.NFGEN.size :])
                header = attrs.get(NFQA_PACKET_HDR)
                payload = attrs.get(NFQA_PAYLOAD)
                if header is None or len(header) < _PACKET_HDR.size:
                    continue
                packet_id, _hw, hook = _PACKET_HDR.unpack_from(header)
                mark = attrs.get(NFQA_MARK)
                indev = attrs.get(NFQA_IFINDEX_INDEV)
                outdev = attrs.get(NFQA_IFINDEX_OUTDEV)
                out.append(
                    QueuedPacket(
                        packet_id,
                        hook,
                        bytes(payload) if payload is not None else b"",
                        _BE32.unpack(mark)[0] if mark is not None and len(mark) == 4 else 0,
                        _BE32.unpack(indev)[0] if indev is not None and len(indev) == 4 else 0,
                        _BE32.unpack(outdev)[0] if outdev is not None and len(outdev) == 4 else 0,
                    )
                )
        return out

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        body = nl.nfgen(socket.AF_UNSPEC, self.number) + nl.attr(
            NFQA_VERDICT_HDR, _VERDICT.pack(verdict, packet_id)
        )
        if mark is not None:
            body += nl.attr(NFQA_MARK, _BE32.pack(mark))
        kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        self._pending.append(nl.message(kind, nl.NLM_F_REQUEST, 0, body))

    def flush(self) -> None:
        """Send the batched verdicts (several netlink messages per datagram)."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), 64):
            chunk = b"".join(pending[start : start + 64])
            try:
                self.sock.send(chunk)
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
                self.sock.send(chunk)

    def close(self) -> None:
        self.sock.close()
