"""Linux TUN devices (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR): create, read, write, MTU/flags.

The link may be moved to another network namespace (``ip link set IFNAME netns X``) while the
file descriptor stays ours; interface ioctls then go through a socket made in the link's
namespace (found with TUNGETDEVNETNS, Linux >= 5.2).

With offload on, a read may return a TSO super-packet and a write may carry coalesced TCP
segments; the packet work (splitting, coalescing, checksums) is in :mod:`wgref.offload`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct

from .offload import VNET_HDR_LEN, ZERO_VNET_HDR, coalesce, split_frame

__all__ = ["DEFAULT_MTU", "IFNAMSIZ", "READ_SIZE", "Tun", "TunGone"]

DEFAULT_MTU = 1420
IFNAMSIZ = 16

# linux/if_tun.h, linux/sockios.h, linux/if.h, linux/sched.h
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNGETDEVNETNS = 0x54E3
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCGIFINDEX = 0x8933
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000

_IFREQ = struct.Struct("16sH22x")  # name + short (flags)
_IFREQ_INT = struct.Struct("16si20x")  # name + int (mtu)

# The TUN file descriptor answers these when its link has been deleted.
_GONE_ERRNOS = frozenset({errno.EBADFD, errno.EIO, errno.ENXIO, errno.ENODEV, errno.EINVAL})

# The largest frame a read can return: a 64 KiB super-packet plus its header (with room).
READ_SIZE = (1 << 16) + VNET_HDR_LEN + 256


class TunGone(OSError):
    """The link behind the TUN file descriptor was deleted."""


def _libc_setns(fd: int, nstype: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Tun:
    """A non-blocking TUN device; ``fd`` is for the event loop.

    With ``offload`` (the default) the device has IFF_VNET_HDR and asks for TSO and checksum
    offload (see the module doc); :meth:`read_packets` and :meth:`write_packets` hide the
    headers. ``offload`` stays False if the kernel refuses.
    """

    def __init__(self, name: str, mtu: int = DEFAULT_MTU, *, offload: bool = True) -> None:
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid interface name {name!r}")
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR
            request = _IFREQ.pack(name.encode(), flags)
            answer = fcntl.ioctl(self.fd, TUNSETIFF, request)
            self._name = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
            self.offload = False
            if offload:
                try:
                    fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                    self.offload = True
                except OSError:
                    pass  # plain packets, each with a zero header
            self._own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self._netns_ino = os.fstat(self._own_netns).st_ino
            self._control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.set_mtu(mtu)
        except BaseException:
            os.close(self.fd)
            raise
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)

    @property
    def name(self) -> str:
        """The link's current name (TUNGETIFF; it follows renames)."""
        try:
            answer = fcntl.ioctl(self.fd, TUNGETIFF, bytes(_IFREQ.size))
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise TunGone(exc.errno, "TUN link deleted") from None
            raise
        name: str = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
        self._name = name
        return name

    def _link_netns(self) -> int | None:
        """A new fd of the link's network namespace (TUNGETDEVNETNS), None on old kernels."""
        try:
            return int(fcntl.ioctl(self.fd, TUNGETDEVNETNS))
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise TunGone(exc.errno, "TUN link deleted") from None
            return None  # old kernel: assume the link did not move

    def in_own_namespace(self) -> bool:
        """Whether the link is in the namespace this process started in."""
        nsfd = self._link_netns()
        if nsfd is None:
            return True
        try:
            return os.fstat(nsfd).st_ino == os.fstat(self._own_netns).st_ino
        finally:
            os.close(nsfd)

    def open_socket(
        self, family: socket.AddressFamily, kind: socket.SocketKind, proto: int = 0
    ) -> tuple[socket.socket, int]:
        """A socket made in the link's current namespace, and that namespace's inode."""
        nsfd = self._link_netns()
        if nsfd is None:
            return socket.socket(family, kind, proto), os.fstat(self._own_netns).st_ino
        try:
            ino = os.fstat(nsfd).st_ino
            if ino == os.fstat(self._own_netns).st_ino:
                return socket.socket(family, kind, proto), ino
            _libc_setns(nsfd, CLONE_NEWNET)
            try:
                return socket.socket(family, kind, proto), ino
            finally:
                _libc_setns(self._own_netns, CLONE_NEWNET)
        finally:
            os.close(nsfd)

    def netns_inode(self) -> int:
        """The inode of the link's current namespace (it changes when the link moves)."""
        nsfd = self._link_netns()
        if nsfd is None:
            return os.fstat(self._own_netns).st_ino
        try:
            return os.fstat(nsfd).st_ino
        finally:
            os.close(nsfd)

    def _control_socket(self) -> socket.socket:
        """A socket in the link's current namespace (made there with setns if it moved)."""
        ino = self.netns_inode()
        if ino != self._netns_ino:
            control, ino = self.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._control.close()
            self._control, self._netns_ino = control, ino
        return self._control

    def _ifreq_int(self, request: int, value: int = 0) -> int:
        name = self.name.encode()
        answer = fcntl.ioctl(self._control_socket(), request, _IFREQ_INT.pack(name, value))
        return int(_IFREQ_INT.unpack(answer)[1])

    def mtu(self) -> int:
        return self._ifreq_int(SIOCGIFMTU)

    def ifindex(self) -> int:
        """The link's index in its current namespace."""
        return self._ifreq_int(SIOCGIFINDEX)

    def set_mtu(self, mtu: int) -> None:
        self._ifreq_int(SIOCSIFMTU, mtu)

    def is_up(self) -> bool:
        name = self.name.encode()
        answer = fcntl.ioctl(self._control_socket(), SIOCGIFFLAGS, _IFREQ.pack(name, 0))
        return bool(_IFREQ.unpack(answer)[1] & IFF_UP)

    def check(self) -> None:
        """Raise TunGone if the link was deleted."""
        _ = self.name

    def read_frame(self) -> bytes:
        """One frame (virtio_net_hdr + packet); BlockingIOError when none is waiting,
        TunGone after deletion."""
        try:
            size = os.readv(self.fd, (self._buffer,))
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise TunGone(exc.errno, "TUN link deleted") from None
            raise
        return bytes(self._view[:size])

    def read_packets(self) -> list[bytes]:
        """The IP packets of one frame (many for a TSO super-packet, none for a frame we
        cannot handle); BlockingIOError when none is waiting, TunGone after deletion."""
        frame = self.read_frame()
        try:
            return split_frame(frame)
        except ValueError:
            return []

    def write(self, packet: bytes) -> None:
        """Write one IP packet as it is."""
        os.write(self.fd, ZERO_VNET_HDR + packet)

    def write_packets(self, packets: list[bytes]) -> None:
        """Write IP packets, coalescing TCP segments (:func:`coalesce`) when offload is on.

        Raises the first OSError after trying every frame."""
        frames = coalesce(packets) if self.offload else [ZERO_VNET_HDR + p for p in packets]
        error: OSError | None = None
        write, fd = os.write, self.fd
        for frame in frames:
            try:
                write(fd, frame)
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        for closer in (self._control.close, lambda: os.close(self._own_netns)):
            with contextlib.suppress(OSError):
                closer()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
