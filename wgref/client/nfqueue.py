"""NFQUEUE over a plain ``AF_NETLINK`` socket (nfnetlink_queue), no C library needed.

A queue receives whole packets (``NFQNL_COPY_PACKET``) and answers them with verdicts,
optionally setting the packet mark. Without ``NFQA_CFG_F_GSO`` the kernel segments GSO packets
and completes checksums before queueing (nfnetlink_queue.c: ``__nfqnl_enqueue_packet_gso``,
``skb_checksum_help``); with it (``gso=True``) a TCP super-packet of up to 64 KiB comes up
whole, flagged ``NFQA_SKB_GSO``, its transport checksum perhaps left partial
(``NFQA_SKB_CSUMNOTREADY``). Verdicts are queued and sent together by :meth:`NfQueue.flush`:
single verdicts first, in order, then one ``NFQNL_MSG_VERDICT_BATCH`` that drops every packet
up to the highest id given :meth:`NfQueue.drop` (nfnetlink_queue.c
``nfqnl_recv_verdict_batch``: it applies to every packet of the queue with an id up to that
one, so the single verdicts must reach the kernel first, as they do in one buffer). A queue
with a verdict helper (:mod:`.verdicts`) hands it its verdicts, but for a flush that only
drops pure ACKs (a download's): those go straight to the kernel, each in a verdict of its
own, since a batch drop could overtake verdicts still with the helper. Measured at a fixed
1 Gbit/s tcp-down, 6 interleaved runs: the client's CPU went from 8.70 to 8.18 s (10 s runs)
and, on a faster day, from 5.95 to 5.84 s (8 s runs, lower in 5 of the 6 pairs).

Why the host's packets are queued rather than copied out by a rule that also drops them
(``log group N`` then ``drop``, nfnetlink_log), which would free each at once as the TUN device
does and spare the verdicts: a netfilter drop at the output hook is an error to the sender
(core.c ``nf_hook_slow`` returns -EPERM, ``ip_local_out`` hands it up), and TCP leaves such a
segment unsent (tcp_output.c ``tcp_write_xmit`` stops at a failed ``tcp_transmit_skb`` before
``tcp_event_new_data_sent``): it sends the same bytes again, merged with the next ones, and
takes the peer's acknowledgment of them for one of data it never sent. Tried on 2026-12-03:
the first bulk transfer stalled at once. A drop verdict comes after the send has succeeded,
and so does a discard device's free: the client takes tunnelled TCP connections' packets that
way (sink.py), leaving the queue their first packets.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import socket
import struct
from typing import NamedTuple

from ..mmsg import Slots
from . import netlink as nl
from .loopback import send_waiting
from .verdicts import VerdictWriter

log = logging.getLogger("wgref.client")

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3

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
NFQA_SKB_INFO = 14
NFQA_SKB_CSUMNOTREADY = 1 << 0
NFQA_SKB_GSO = 1 << 1
NFQA_CFG_F_GSO = 1 << 2

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
RECV_SIZE = 1 << 17  # a 64 KiB packet with its netlink headers and attributes
# Messages read per recvmmsg: as many as a read takes (run.py BATCH). One recv per message
# was 9 % of the client's time under a UDP flood; the UDP test at a fixed 250 Mbit/s then
# took 7 % less CPU per bit (563 against 527 Mbit per CPU-second, 3 interleaved runs).
RECV_SLOTS = 64
_PACKET_KIND = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_VERDICT_KIND = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
_BATCH_KIND = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH
_NLMSG = struct.Struct("=IH")  # nlmsghdr's length and type
_NLATTR = struct.Struct("=HH")  # nlattr's length and type
_BODY = nl.HEADER.size + nl.NFGEN.size  # a message's first attribute
_BE32_ATTRS = frozenset((NFQA_MARK, NFQA_IFINDEX_INDEV, NFQA_IFINDEX_OUTDEV, NFQA_SKB_INFO))


class QueueError(OSError):
    pass


class QueuedPacket(NamedTuple):
    packet_id: int
    hook: int
    payload: bytearray  # the client's own copy: a super-packet's headers are rewritten in it
    mark: int
    indev: int
    outdev: int
    gso: bool = False  # a GSO super-packet (only on a queue bound with gso=True)
    # its transport checksum left partial (NFQA_SKB_CSUMNOTREADY; only on a queue bound with
    # gso=True: without it the kernel completes the checksum before queueing)
    csum_partial: bool = False


class NfQueue:
    """One bound queue; ``receive`` is non-blocking, verdicts are batched until ``flush``."""

    def __init__(self, number: int, maxlen: int = 4096, *, gso: bool = False,
                 verdict_helper: bool = False) -> None:
        """``verdict_helper``: verdicts are written by a helper process
        (:mod:`.verdicts`, for the TCP queue), or by this one when it cannot be started."""
        self.number = number
        self.writer: VerdictWriter | None = None
        self._seq = 0
        self._clear_verdicts()
        self._slots = Slots(RECV_SLOTS, RECV_SIZE)
        self._buffer = self._slots.buffer
        self._view = memoryview(self._buffer)
        self._nfgen = nl.nfgen(socket.AF_UNSPEC, number)
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
            if gso:
                self._config(nl.attr(NFQA_CFG_FLAGS, _BE32.pack(NFQA_CFG_F_GSO)),
                             nl.attr(NFQA_CFG_MASK, _BE32.pack(NFQA_CFG_F_GSO)))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        if verdict_helper:
            try:
                self.writer = VerdictWriter(self.sock)
            except OSError as exc:
                log.warning("no verdict helper process (%s): the client sends verdicts "
                            "itself", exc)

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
        """Up to ``limit`` queued packets (fewer when the socket is drained), read with one
        recvmmsg: each netlink datagram in a slot of its own, so every payload stays in place
        until it is copied out."""
        out: list[QueuedPacket] = []
        buffer = self._buffer
        try:
            received = self._slots.receive(self.sock.fileno(), limit)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # NETLINK_NO_ENOBUFS is asked for; if not granted
                return out
            raise
        for offset, size in received:
            size += offset
            while offset + _NLMSG.size <= size:
                length, kind = _NLMSG.unpack_from(buffer, offset)
                if length < nl.HEADER.size or offset + length > size:
                    break
                if kind == _PACKET_KIND:
                    item = self._packet(offset + _BODY, offset + length)
                    if item is not None:
                        out.append(item)
                offset += (length + 3) & ~3
        return out

    def _packet(self, offset: int, end: int) -> QueuedPacket | None:
        """The packet whose attributes are in the receive buffer from ``offset`` to ``end``
        (one pass over them, none copied but the payload)."""
        buffer = self._buffer
        packet_id = hook = mark = indev = outdev = skb_info = 0
        payload = bytearray()
        have_header = False
        while offset + 4 <= end:
            length, kind = _NLATTR.unpack_from(buffer, offset)
            if length < 4 or offset + length > end:
                break
            kind &= nl.NLA_TYPE_MASK
            if kind == NFQA_PAYLOAD:
                payload = bytearray(self._view[offset + 4 : offset + length])
            elif length == 8 and kind in _BE32_ATTRS:
                value = _BE32.unpack_from(buffer, offset + 4)[0]
                if kind == NFQA_MARK:
                    mark = value
                elif kind == NFQA_IFINDEX_INDEV:
                    indev = value
                elif kind == NFQA_IFINDEX_OUTDEV:
                    outdev = value
                else:
                    skb_info = value
            elif kind == NFQA_PACKET_HDR and length >= 4 + _PACKET_HDR.size:
                packet_id, _hw, hook = _PACKET_HDR.unpack_from(buffer, offset + 4)
                have_header = True
            offset += (length + 3) & ~3
        if not have_header:
            return None
        return QueuedPacket(packet_id, hook, payload, mark, indev, outdev,
                            bool(skb_info & NFQA_SKB_GSO),
                            bool(skb_info & NFQA_SKB_CSUMNOTREADY))

    def _clear_verdicts(self) -> None:
        self._pending: list[bytes] = []  # single verdicts, as netlink messages
        self._drop_upto = -1  # the batch drop's packet id
        self._pure_acks: list[int] = []  # the packets dropped that were pure ACKs
        self._helped = False  # whether a verdict since the last flush sets off work

    def _verdict_message(self, kind: int, verdict: int, packet_id: int,
                         mark: int | None = None) -> bytes:
        """A verdict (``kind`` _VERDICT_KIND: for ``packet_id``; _BATCH_KIND: for every
        packet of the queue up to it) as a netlink message."""
        body = self._nfgen + nl.attr(NFQA_VERDICT_HDR, _VERDICT.pack(verdict, packet_id))
        if mark is not None:
            body += nl.attr(NFQA_MARK, _BE32.pack(mark))
        return nl.message(kind, nl.NLM_F_REQUEST, 0, body)

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        """A verdict for one packet, sent by the next :meth:`flush` (before the batch drop)."""
        self._helped = True  # an accepted packet goes on through the stack in the sender
        self._pending.append(self._verdict_message(_VERDICT_KIND, verdict, packet_id, mark))

    def drop(self, packet_id: int, *, pure_ack: bool = False) -> None:
        """Drop this packet with the next :meth:`flush`'s batch verdict (which drops every
        packet of the queue up to the highest such id that has no verdict yet). ``pure_ack``:
        a TCP ACK without data, whose freeing sets off nothing (tcp_output.c: the kernel
        frees a pure ACK with ``__sock_wfree``, not ``tcp_wfree``, TCP Small Queues' hook)."""
        if pure_ack:
            self._pure_acks.append(packet_id)
        else:
            self._helped = True
        if packet_id > self._drop_upto:
            self._drop_upto = packet_id

    def flush(self) -> None:
        """Send the queued verdicts: the single ones, then the batch drop, several netlink
        messages per datagram; by the helper unless they only drop pure ACKs (handing them to
        it, and waking it, would cost more than the drop: tcp-down's ACKs)."""
        pending, self._pending = self._pending, []
        pure_acks, self._pure_acks = self._pure_acks, []
        helper = self.writer if self._helped else None
        self._helped = False
        if helper is None and self.writer is not None and pure_acks:
            # Each dropped alone: a batch drop would also drop packets whose verdicts the
            # helper may not have written yet.
            pending += [self._verdict_message(_VERDICT_KIND, NF_DROP, packet_id)
                        for packet_id in pure_acks]
            self._drop_upto = -1
        if self._drop_upto >= 0:
            pending.append(self._verdict_message(_BATCH_KIND, NF_DROP, self._drop_upto))
            self._drop_upto = -1
        for start in range(0, len(pending), 64):
            chunk = b"".join(pending[start : start + 64])
            if helper is not None and helper.send(chunk):
                continue
            send_waiting(self.sock, functools.partial(self.sock.send, chunk), 1.0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.sock.close()
