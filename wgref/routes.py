"""Route lookups over rtnetlink (RTM_GETROUTE), cached until the routing changes.

The kernel's WireGuard asks the routing table for every datagram it sends (socket.c send4:
``ip_route_output_flow``, with a per-peer dst_cache); a userspace sender gets the same answer
from ``RTM_GETROUTE`` (what ``ip route get`` prints), at ~30 us a question. Answers are kept
in a dictionary and the dictionary is emptied whenever the kernel announces a change of
routes, addresses or links (RTNLGRP_IPV4_ROUTE, _IPV6_ROUTE, _IPV4_IFADDR, _IPV6_IFADDR,
RTNLGRP_LINK on a second netlink socket the event loop watches), so a lookup on the data path
is one dictionary hit. rtnetlink(7), include/uapi/linux/rtnetlink.h.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from .allowedips import AllowedIPs

__all__ = ["Route", "RouteCache", "RouteMtus"]

NETLINK_ROUTE = 0
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
RTA_DST, RTA_SRC, RTA_OIF, RTA_PREFSRC, RTA_METRICS, RTA_MARK = 1, 2, 4, 7, 8, 16
RTAX_MTU = 2
# RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
_GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_CACHE_LIMIT = 1 << 16  # answers kept (one per peer endpoint and source in use)


class Route(NamedTuple):
    """What routing does with a packet: the output interface, the source it would pick, and
    the route's MTU (0 when the route has none: the interface's MTU applies)."""

    oif: int
    prefsrc: str
    mtu: int


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + bytes(-length % 4)


def _attributes(data: bytes, offset: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break
        found[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


SocketFactory = Callable[[socket.AddressFamily, socket.SocketKind, int], socket.socket]


class _Rtnetlink:
    """A query socket and a change-notification socket (for the event loop) on rtnetlink,
    made by ``make_socket`` (the TUN's namespace may differ from ours)."""

    def __init__(self, make_socket: SocketFactory = socket.socket) -> None:
        self._query = make_socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._query.settimeout(1.0)
        self._monitor = make_socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._monitor.bind((0, _GROUPS))
            self._monitor.setblocking(False)
        except BaseException:
            self.close()
            raise
        self._seq = itertools.count(1)

    def fileno(self) -> int:
        return self._monitor.fileno()

    def _drain(self) -> None:
        # ENOBUFS (notifications lost to a full buffer) also means: something changed.
        with contextlib.suppress(OSError):
            while self._monitor.recv(1 << 16):
                pass

    def close(self) -> None:
        self._query.close()
        self._monitor.close()


class RouteCache(_Rtnetlink):
    """``lookup(destination, source, mark)`` answers as ``ip route get`` would; see the
    module doc. :meth:`fileno` is the change-notification socket, :meth:`changed` drains it."""

    def __init__(self, make_socket: SocketFactory = socket.socket) -> None:
        super().__init__(make_socket)
        self._cache: dict[tuple[str, str, int], Route | None] = {}
        self.lookups = 0  # netlink round trips, for tests and reports

    def changed(self) -> None:
        """Drain the notifications and forget every answer."""
        self._drain()
        self._cache.clear()

    def lookup(self, destination: str, source: str = "", mark: int = 0) -> Route | None:
        """The route for a datagram to ``destination`` from ``source`` ("" lets routing
        choose) with SO_MARK ``mark``; None when routing refuses (e.g. ``source`` is not a
        local address any more, or no route)."""
        key = (destination, source, mark)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        route = self._ask(destination, source, mark)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = route
        return route

    def _ask(self, destination: str, source: str, mark: int) -> Route | None:
        self.lookups += 1
        host = destination.partition("%")[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        bits = 128 if family == socket.AF_INET6 else 32
        attrs = _attr(RTA_DST, socket.inet_pton(family, host))
        if source:
            attrs += _attr(RTA_SRC, socket.inet_pton(family, source.partition("%")[0]))
        if mark:
            attrs += _attr(RTA_MARK, _U32.pack(mark))
        body = _RTMSG.pack(family, bits, bits if source else 0, 0, 0, 0, 0, 0, 0) + attrs
        seq = next(self._seq)
        message = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, seq, 0)
        try:
            self._query.send(message + body)
            while True:
                data = self._query.recv(1 << 16)
                length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data)
                if got == seq:
                    break
        except OSError:
            return None
        if kind == NLMSG_ERROR or kind != RTM_NEWROUTE:
            return None
        attributes = _attributes(data[:length], _NLMSGHDR.size + _RTMSG.size)
        oif = _U32.unpack(attributes[RTA_OIF])[0] if RTA_OIF in attributes else 0
        prefsrc = attributes.get(RTA_PREFSRC, b"")
        mtu = 0
        if RTA_METRICS in attributes:
            metric = _attributes(attributes[RTA_METRICS], 0).get(RTAX_MTU)
            if metric is not None:
                mtu = _U32.unpack(metric)[0]
        text = socket.inet_ntop(family, prefsrc) if len(prefsrc) in (4, 16) else ""
        return Route(oif, text, mtu)


NLM_F_DUMP = 0x300
NLMSG_DONE = 3
RTN_UNICAST = 1


class RouteMtus(_Rtnetlink):
    """The MTUs of the routes that lead into the tunnel link, for padding (kernel send.c
    calculate_skb_padding pads to ``dst_mtu(skb_dst(skb))``, the MTU of the route the inner
    packet took, not the interface's).

    A TUN read carries no route, so the routes through the link (any table) are dumped from
    the link's namespace and matched by longest prefix on the inner destination. The dump is
    redone when rtnetlink there announces a change and when the link's MTU changes.
    :attr:`active` is False unless some route has an MTU other than the link's: then the data
    path does not look anything up at all. A route's MTU applies even above the link's, as
    ipv4_mtu/ip6_mtu return the route metric before the device's.

    Not covered (documented limits): policy routing that picks a table by source, mark, uid or
    ports (the longest prefix over all tables stands in for the kernel's rule walk); path-MTU
    exceptions learnt from ICMP for destinations behind the tunnel (they live in the route
    cache, not the tables dumped).
    """

    def __init__(self, make_socket: SocketFactory) -> None:
        super().__init__(make_socket)
        self._table: AllowedIPs[int] = AllowedIPs()
        self.active = False
        self.stale = True

    def changed(self) -> None:
        self._drain()
        self.stale = True

    def refresh(self, ifindex: int, link_mtu: int) -> None:
        """Dump the routes through ``ifindex`` again."""
        table: AllowedIPs[int] = AllowedIPs()
        active = False
        for family in (socket.AF_INET, socket.AF_INET6):
            for prefix, mtu in self._dump(family, ifindex):
                effective = mtu or link_mtu
                active = active or effective != link_mtu
                table.insert(prefix, effective)
        self._table, self.active, self.stale = table, active, False

    def mtu_for(self, destination: bytes, default: int) -> int:
        value = self._table.lookup(destination)
        return default if value is None else value

    def _dump(
        self, family: socket.AddressFamily, ifindex: int
    ) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]]:
        seq = next(self._seq)
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        found: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = []
        bits = 32 if family == socket.AF_INET else 128
        try:
            self._query.send(header + body)
            while True:
                data = self._query.recv(1 << 20)
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, kind, _flags, got, _pid = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size:
                        return found
                    if got == seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                        return found
                    if got == seq and kind == RTM_NEWROUTE:
                        route = self._route(data[offset : offset + length], family, bits, ifindex)
                        if route is not None:
                            found.append(route)
                    offset += (length + 3) & ~3
        except OSError:
            return found

    @staticmethod
    def _route(
        message: bytes, family: socket.AddressFamily, bits: int, ifindex: int
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int] | None:
        fields = _RTMSG.unpack_from(message, _NLMSGHDR.size)
        dst_len, route_type = fields[1], fields[7]
        if route_type != RTN_UNICAST:
            return None
        attributes = _attributes(message, _NLMSGHDR.size + _RTMSG.size)
        oif = attributes.get(RTA_OIF)
        if oif is None or _U32.unpack(oif)[0] != ifindex:
            return None
        raw = attributes.get(RTA_DST, bytes(bits // 8))
        mtu = 0
        if RTA_METRICS in attributes:
            metric = _attributes(attributes[RTA_METRICS], 0).get(RTAX_MTU)
            if metric is not None:
                mtu = _U32.unpack(metric)[0]
        address = int.from_bytes(raw, "big")
        network = (
            ipaddress.IPv4Network((address, dst_len), strict=False)
            if family == socket.AF_INET
            else ipaddress.IPv6Network((address, dst_len), strict=False)
        )
        return network, mtu
