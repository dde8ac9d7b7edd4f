"""recvmmsg(2), which Python's socket module lacks, over ctypes: the messages waiting on a
socket, many in one call, into buffers set up once. The UDP sockets (wgref/udp.py, with each
datagram's address and ancillary data) and the client's NFQUEUE socket
(wgref/client/nfqueue.py, :class:`Slots`: netlink messages, nothing else) read this way.

Layouts as in the C headers (native alignment): struct mmsghdr is a msghdr (name, namelen,
iov, iovlen, control, controllen, flags) followed by msg_len; struct iovec is (base, len).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

__all__ = ["IOVEC", "MMSGHDR", "Slots", "address_of", "recvmmsg"]

MSG_DONTWAIT = 0x40
MMSGHDR = struct.Struct("@PIPNPNi0PI0P")
IOVEC = struct.Struct("@PN")

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


def address_of(buffer: bytearray | mmap.mmap) -> int:
    """The address of a writable buffer's first byte (the buffer must outlive its uses)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def recvmmsg(fd: int, headers: int, count: int) -> int:
    """Receive up to ``count`` messages without waiting into the ``struct mmsghdr`` array at
    address ``headers``; how many came (0 when none waits). OSError for a socket error."""
    n = _recvmmsg(fd, headers, count, MSG_DONTWAIT, None)
    if n > 0:
        return int(n)
    code = ctypes.get_errno()
    if n == 0 or code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return 0
    raise OSError(code, os.strerror(code))


class Slots:
    """``count`` receive buffers of ``size`` bytes, one message each, for a socket whose
    messages carry no address or ancillary data worth keeping (netlink). The buffers are an
    anonymous mapping: a page becomes resident only once the kernel writes to it."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.buffer = mmap.mmap(-1, count * size)
        self._iovecs = bytearray(count * IOVEC.size)
        self._headers = bytearray(count * MMSGHDR.size)
        base, iovecs = address_of(self.buffer), address_of(self._iovecs)
        for i in range(count):
            IOVEC.pack_into(self._iovecs, i * IOVEC.size, base + i * size, size)
            MMSGHDR.pack_into(self._headers, i * MMSGHDR.size,
                              0, 0, iovecs + i * IOVEC.size, 1, 0, 0, 0, 0)
        self._address = address_of(self._headers)

    def receive(self, fd: int, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` waiting messages (no more than ``count``): where each starts in
        :attr:`buffer` and its length. (The kernel writes only msg_len and msg_flags: with no
        name or control, nothing needs restoring for the next call.)"""
        n = recvmmsg(fd, self._address, min(limit, self.count))
        used = memoryview(self._headers)[: n * MMSGHDR.size]
        return [(i * self.size, fields[-1])
                for i, fields in enumerate(MMSGHDR.iter_unpack(used))]
