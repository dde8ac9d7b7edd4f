"""The UDP side of the I/O shells (``wgref IFNAME`` and the transparent client): one IPv4 and
one IPv6 socket on a port, SO_MARK, batched receives that report the local address each
datagram arrived on, and batched sends from a chosen local address.

Sticky source addresses (kernel socket.c): the kernel answers a peer from the address and
interface its authenticated datagram arrived on (``struct endpoint`` src4/src_if4, src6), and
keeps that source until a send with it fails. Here the receive path asks for IP_PKTINFO /
IPV6_RECVPKTINFO and turns each datagram's ancillary data into an
:class:`~wgref.results.Endpoint` (``local``, ``ifindex``); the send path puts ``local`` into an
IP_PKTINFO / IPV6_PKTINFO control message. When the address is gone the kernel refuses the
send (EINVAL, or EADDRNOTAVAIL for IPv6): :meth:`UdpSockets.send` then sends again with the
source left to routing and reports the endpoint, so the caller forgets the source, as
socket.c send4/send6 do (``endpoint->src4.s_addr = 0`` and a new route lookup).

Batching: per-datagram syscalls dominated the profile (recvfrom, sendto), so datagrams move in
batches: recvmmsg(2) (wgref/mmsg.py) fills preallocated buffers, and UDP_GRO lets the kernel
hand over a train of same-size datagrams from one sender as one buffer; sendmsg with
UDP_SEGMENT (GSO) sends a run of same-size datagrams to one endpoint in one call, the kernel
cutting them apart (the wire sees ordinary datagrams). Linux include/uapi/linux/udp.h,
include/uapi/linux/in.h, include/uapi/linux/in6.h and
Documentation/networking/segmentation-offloads.rst.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import socket
import struct
import sys
from collections.abc import Callable

from .mmsg import IOVEC as _IOVEC
from .mmsg import MMSGHDR as _MMSGHDR
from .mmsg import address_of as _address_of
from .mmsg import recvmmsg
from .results import Endpoint
from .routes import RouteCache

__all__ = [
    "SO_MARK",
    "BatchReceiver",
    "UdpSockets",
    "open_udp_socket",
    "send_batch",
]

log = logging.getLogger("wgref.udp")

SO_MARK = 36  # linux/socket.h
SOCKET_BUFFER = 4 << 20
RECV_BATCH = 64  # datagrams (or UDP_GRO trains) per recvmmsg call

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
IP_PKTINFO = 8  # linux/in.h
IPV6_RECVPKTINFO = 49  # linux/in6.h
IPV6_PKTINFO = 50
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on older kernels (128 since 6.x)
GSO_MAX_BYTES = 0xFFFF - 20 - 8  # a UDP payload in an IPv4 packet
RECV_SIZE = 1 << 16  # one datagram, or one UDP_GRO train
_NAME_SIZE = 28  # sizeof(struct sockaddr_in6)
# Room for a UDP_GRO int and an in6_pktinfo, each after a 16-byte cmsghdr, 8-byte aligned.
_CONTROL_SIZE = 96
# Each message's address and ancillary data share one slot (the control part 8-aligned), so
# one slice is the key that tells whether a message came the same way as the one before.
_CONTROL_AT = 32
_META_SIZE = _CONTROL_AT + _CONTROL_SIZE
# A send whose source address is not (or no longer) ours: ip_route_output_key_hash_rcu
# answers -ENETUNREACH (no device has the address) or -EINVAL; ip6_datagram_send_ctl -EINVAL,
# or EADDRNOTAVAIL from the IPv6 source check. Only a send that then works without the
# source proves the source was the problem.
SOURCE_GONE = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH})

# A cmsghdr (len, level, type), native layout.
_CMSGHDR = struct.Struct("@Nii")
_CMSG_ALIGN = struct.calcsize("@N")
_INT = struct.Struct("@i")
_IN_PKTINFO = struct.Struct("@i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("@16si")  # ipi6_addr, ipi6_ifindex
_SOCKADDR_IN = struct.Struct("=H2s4s")  # family, port (network order), address
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")  # family, port, flowinfo, address, scope id

def _sockaddr(name: bytes) -> tuple[str, int]:
    """(host, port) from a raw sockaddr_in/in6, as recvfrom would give them."""
    family = int.from_bytes(name[:2], sys.byteorder)
    if family == socket.AF_INET:
        _, port, raw = _SOCKADDR_IN.unpack_from(name)
        return socket.inet_ntop(socket.AF_INET, raw), int.from_bytes(port, "big")
    _, port, _flow, raw, scope = _SOCKADDR_IN6.unpack_from(name)
    host = socket.inet_ntop(socket.AF_INET6, raw)
    if scope:
        try:
            host += "%" + socket.if_indextoname(scope)
        except OSError:
            host += f"%{scope}"
    return host, int.from_bytes(port, "big")


def _control(data: bytes) -> tuple[int, str, int]:
    """(UDP_GRO segment size or 0, local address or "", interface index) from the ancillary
    data of one received message."""
    gso_size, local, ifindex = 0, "", 0
    offset, size = 0, len(data)
    while offset + _CMSGHDR.size <= size:
        length, level, kind = _CMSGHDR.unpack_from(data, offset)
        if length < _CMSGHDR.size or offset + length > size:
            break
        body = offset + _CMSGHDR.size
        if level == SOL_UDP and kind == UDP_GRO:
            gso_size = _INT.unpack_from(data, body)[0]
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            ifindex, _spec_dst, address = _IN_PKTINFO.unpack_from(data, body)
            local = socket.inet_ntop(socket.AF_INET, address)
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            address, ifindex = _IN6_PKTINFO.unpack_from(data, body)
            local = socket.inet_ntop(socket.AF_INET6, address)
        offset += (length + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
    return gso_size, local, ifindex


def source_control(endpoint: Endpoint | tuple[str, int]) -> list[tuple[int, int, bytes]]:
    """The control message that sends from ``endpoint.local`` (none when it is unset, or for
    a plain ``(host, port)``). The interface index stays 0: routing picks the way out, as
    the kernel's route lookup with a fixed source does (socket.c send4/send6 set only the
    source address)."""
    local = endpoint.local if isinstance(endpoint, Endpoint) else ""
    if not local:
        return []
    if ":" in local:
        packed = socket.inet_pton(socket.AF_INET6, local.partition("%")[0])
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, 0))]
    packed = socket.inet_pton(socket.AF_INET, local)
    return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, bytes(4)))]


class BatchReceiver:
    """recvmmsg(2) on one non-blocking UDP socket with UDP_GRO and packet info, into
    preallocated buffers."""

    def __init__(self, sock: socket.socket, count: int = RECV_BATCH) -> None:
        self.sock = sock
        self.count = count
        with contextlib.suppress(OSError):  # an old kernel: one datagram per message
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        # An anonymous mapping, not a bytearray: its pages become resident only once the
        # kernel writes to them (a 1500-byte datagram touches one page of its 64 KiB slot).
        self._data = mmap.mmap(-1, count * RECV_SIZE)
        self._view = memoryview(self._data)
        self._meta = bytearray(count * _META_SIZE)
        self._iovecs = bytearray(count * _IOVEC.size)
        self._headers = bytearray(count * _MMSGHDR.size)
        data, meta = _address_of(self._data), _address_of(self._meta)
        iovecs = _address_of(self._iovecs)
        for i in range(count):
            _IOVEC.pack_into(self._iovecs, i * _IOVEC.size, data + i * RECV_SIZE, RECV_SIZE)
            _MMSGHDR.pack_into(
                self._headers,
                i * _MMSGHDR.size,
                meta + i * _META_SIZE,
                _NAME_SIZE,
                iovecs + i * _IOVEC.size,
                1,
                meta + i * _META_SIZE + _CONTROL_AT,
                _CONTROL_SIZE,
                0,
                0,
            )
        # The kernel rewrites namelen, controllen, flags and msg_len: restored after each call.
        self._pristine = bytes(self._headers)
        self._address = _address_of(self._headers)
        self._last_key = b""
        self._last: tuple[Endpoint, int] = (Endpoint("", 0), 0)

    def receive(self) -> tuple[list[bytes], list[Endpoint]]:
        """The datagrams waiting (up to ``count`` messages) and where each came from and
        arrived; empty lists when there are none. OSError for a socket error (e.g. an ICMP
        error reported)."""
        n = recvmmsg(self.sock.fileno(), self._address, self.count)
        if not n:
            return [], []
        datagrams: list[bytes] = []
        sources: list[Endpoint] = []
        view, meta = self._view, self._meta
        last_key, (source, gso_size) = self._last_key, self._last
        used = n * _MMSGHDR.size
        for i, (_, namelen, _, _, _, controllen, _, length) in enumerate(
            _MMSGHDR.iter_unpack(memoryview(self._headers)[:used])
        ):
            # Consecutive datagrams of one flow have the same address and ancillary data
            # (the kernel writes the same name length every time on one socket).
            start = i * _META_SIZE
            key = bytes(meta[start : start + _CONTROL_AT + controllen])
            if key != last_key:
                last_key = key
                host, port = _sockaddr(key[:namelen])
                gso_size, local, ifindex = _control(key[_CONTROL_AT:])
                source = Endpoint(host, port, local, ifindex)
            base = i * RECV_SIZE
            if 0 < gso_size < length:
                # A UDP_GRO train: same-size datagrams, the last maybe shorter.
                for offset in range(base, base + length, gso_size):
                    end = min(offset + gso_size, base + length)
                    datagrams.append(bytes(view[offset:end]))
                    sources.append(source)
                continue
            datagrams.append(bytes(view[base : base + length]))
            sources.append(source)
        self._headers[:used] = self._pristine[:used]
        self._last_key, self._last = last_key, (source, gso_size)
        return datagrams, sources


def send_batch(
    sock: socket.socket, destination: Endpoint | tuple[str, int], datagrams: list[bytes]
) -> None:
    """Send ``datagrams`` to one destination in order, from ``destination.local`` if set, in
    as few sendmsg calls as UDP_SEGMENT allows: a run of equal sizes (the last may be
    shorter) up to 64 datagrams or 64 KiB goes in one call. Raises the first OSError after
    trying the rest."""
    error: OSError | None = None
    address = (destination[0], destination[1])
    control = source_control(destination)
    sendmsg = sock.sendmsg
    i, n = 0, len(datagrams)
    while i < n:
        size = len(datagrams[i])
        j, total = i + 1, size
        while j < n and j - i < GSO_MAX_SEGMENTS:
            following = len(datagrams[j])
            if following > size or total + following > GSO_MAX_BYTES:
                break
            total += following
            j += 1
            if following < size:
                break
        try:
            if j - i == 1:
                sendmsg(datagrams[i : i + 1], control, 0, address)
            else:
                segment = [*control, (SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                try:
                    sendmsg(datagrams[i:j], segment, 0, address)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.ENOBUFS) or exc.errno in SOURCE_GONE:
                        raise
                    # No GSO for this route (e.g. datagrams larger than its MTU): one by one.
                    for datagram in datagrams[i:j]:
                        sendmsg([datagram], control, 0, address)
        except OSError as exc:
            if exc.errno in SOURCE_GONE and control:
                raise  # the caller forgets the source and sends the whole run again
            error = error or exc
        i = j
    if error is not None:
        raise error


def open_udp_socket(family: socket.AddressFamily, port: int, mark: int = 0) -> socket.socket:
    """A non-blocking UDP socket bound to ``port`` on every address of ``family`` (IPv6:
    V6ONLY), with large buffers and SO_MARK ``mark`` (if not 0)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSockets:
    """The IPv4 and IPv6 sockets of one listen port (IPv6 optional: a namespace may have
    none), their receivers, and sends with sticky sources.

    ``on_source_gone(endpoint)`` is called when ``endpoint.local`` stopped being usable: a
    send from it failed, or (IPv4, with ``routes``) the route to the peer no longer leaves
    through the interface its datagrams arrived on (socket.c send4: ``rt->dst.dev->ifindex
    != endpoint->src_if4``, e.g. a more specific route appeared); the datagrams went from a
    routed source instead."""

    def __init__(
        self,
        on_source_gone: Callable[[Endpoint], None] | None = None,
        routes: RouteCache | None = None,
    ) -> None:
        self.routes = routes
        self.sock4: socket.socket | None = None
        self.sock6: socket.socket | None = None
        self.receivers: dict[int, BatchReceiver] = {}
        self.port = 0
        self.mark = 0
        self.on_source_gone = on_source_gone

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.sock4, self.sock6) if s is not None]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()
        self.sock4 = self.sock6 = None
        self.receivers.clear()
        self.port = 0

    def bind(self, port: int) -> None:
        """(Re)bind both sockets; 0 picks a random port free for IPv4 and IPv6. The old
        sockets are closed first (callers unregister them from their loop before)."""
        self.close()
        for _attempt in range(1 if port else 16):
            sock4 = open_udp_socket(socket.AF_INET, port, self.mark)
            actual = sock4.getsockname()[1]
            try:
                sock6: socket.socket | None = open_udp_socket(socket.AF_INET6, actual, self.mark)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    sock4.close()
                    if port:
                        raise
                    continue
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    sock4.close()
                    raise
                sock6 = None  # no IPv6 in this namespace
            break
        else:
            raise OSError(errno.EADDRINUSE, "no port free for both IPv4 and IPv6")
        self.sock4, self.sock6, self.port = sock4, sock6, actual
        for sock in self.sockets():
            self.receivers[sock.fileno()] = BatchReceiver(sock)

    def set_mark(self, mark: int) -> None:
        for sock in self.sockets():
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.mark = mark

    def send(self, destination: Endpoint, datagrams: list[bytes]) -> None:
        """Send a run of datagrams to one endpoint; errors are logged, never raised."""
        sock = self.sock6 if ":" in destination[0] else self.sock4
        if sock is None:
            return
        if destination.ifindex and sock is self.sock4 and self.routes is not None:
            route = self.routes.lookup(destination.host, destination.local, self.mark)
            if route is None or route.oif != destination.ifindex:
                log.debug("route to %s leaves from another interface than it came in on: "
                          "source %s forgotten", destination.host, destination.local)  # fmt: skip
                if self.on_source_gone is not None:
                    self.on_source_gone(destination)
                destination = destination.without_source()
        try:
            send_batch(sock, destination, datagrams)
        except OSError as exc:
            if exc.errno not in SOURCE_GONE or not destination.local:
                log.debug("sendto %s: %s", destination.address, exc)
                return
            try:
                send_batch(sock, destination.without_source(), datagrams)
            except OSError as again:
                log.debug("sendto %s: %s", destination.address, again)
                return
            log.debug("source %s of %s is gone (%s): routing picks one", destination.local,
                      destination.address, exc.strerror)  # fmt: skip
            if self.on_source_gone is not None:
                self.on_source_gone(destination)
