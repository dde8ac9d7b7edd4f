"""The cross-platform userspace API (https://www.wireguard.com/xplatform/), sans-I/O.

A client connects to ``/var/run/wireguard/IFNAME.sock`` and sends ``get=1\\n\\n`` or
``set=1\\n`` followed by ``key=value`` lines and a blank line; the answer is ``key=value`` lines
(for get) and ``errno=N\\n\\n``. :class:`UapiConnection` turns the bytes of one connection into
answers and into changes of a :class:`~wgref.device.Device`; the shell only moves bytes.

Behaviour matches wireguard-go as observed (v0.0.20220316): a set is applied line by line, so
the lines before a bad one stay applied; the error is answered at once (``errno=-22`` for a bad
key or value, ``-71`` for a line without ``=``) and the rest of that request is ignored; an
unknown operation closes the connection without an answer.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Protocol

from .device import Device, Network
from .peer import Peer
from .results import Batch, Endpoint

__all__ = [
    "MemoryHost",
    "UapiConnection",
    "UapiError",
    "UapiHost",
    "format_endpoint",
    "format_network",
    "parse_allowed_ip",
    "parse_endpoint",
    "render_get",
    "request",
]

_DIGITS = re.compile(r"[0-9]+")
_PREFIX = re.compile(r"\+?[0-9]+")  # wireguard-go accepts "/+8" and "/08"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_V4_MAPPED = bytes(10) + b"\xff\xff"
# A longer line is answered with errno=-5 (EIO) and ends the connection, as wireguard-go does
# (observed: a 70,000-byte line gets -5, a 5,000-byte one -22; Go's bufio.Scanner stops at
# 64 KiB). The longest valid line (an allowed_ip or endpoint) is ~60 bytes.
MAX_LINE = 1 << 16


class UapiError(Exception):
    """A request that fails with ``errno=-code``."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail or errno.errorcode.get(code, str(code)))
        self.code = code


class UapiHost(Protocol):
    """What the shell owns: the UDP sockets (listen port, fwmark)."""

    @property
    def listen_port(self) -> int: ...

    @property
    def fwmark(self) -> int: ...

    def set_listen_port(self, port: int) -> None:
        """Rebind (0: a random port); raise OSError when the port cannot be bound."""

    def set_fwmark(self, mark: int) -> None:
        """Set SO_MARK on the sockets (0 clears it); raise OSError on failure."""


@dataclass
class MemoryHost:
    """A host without sockets, for tests and tools: it just remembers the values."""

    listen_port: int = 0
    fwmark: int = 0

    def set_listen_port(self, port: int) -> None:
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark


# ----------------------------------------------------------------- values


def _key(value: str) -> bytes:
    # xplatform: keys are 64 lowercase hex digits (wireguard-go accepts upper case too).
    if not _HEX_KEY.fullmatch(value):
        raise UapiError(errno.EINVAL, "a key is 64 hex digits")
    return bytes.fromhex(value)


def _bounded(digits: str, maximum: int) -> int | None:
    """The value of a decimal string if it is at most ``maximum``, else None. Leading zeros
    are allowed (Go's strconv.ParseUint allows them); the length is checked before ``int()``,
    so thousands of digits cost nothing and never hit Python's int-conversion limit."""
    if not _DIGITS.fullmatch(digits):
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if value <= maximum else None


def _uint(value: str, maximum: int) -> int:
    number = _bounded(value, maximum)
    if number is None:
        raise UapiError(errno.EINVAL, f"not an integer in [0, {maximum}]: {value[:32]!r}")
    return number


def _true(value: str) -> None:
    # wireguard-go accepts only "true" for the boolean keys.
    if value != "true":
        raise UapiError(errno.EINVAL, f"expected true, got {value!r}")


def _zone_ok(zone: str) -> bool:
    if _DIGITS.fullmatch(zone):
        return True
    try:
        socket.if_nametoindex(zone)
    except OSError:
        return False
    return True


def parse_endpoint(value: str) -> Endpoint:
    """``a.b.c.d:port`` or ``[v6(%zone)]:port``, numeric only (no DNS), as wireguard-go."""
    host, sep, port_text = value.rpartition(":")
    port = _bounded(port_text, 0xFFFF) if sep else None
    if port is None:
        raise UapiError(errno.EINVAL, f"bad endpoint {value[:64]!r}")
    try:
        if host.startswith("[") and host.endswith("]"):
            address, _, zone = host[1:-1].partition("%")
            packed = socket.inet_pton(socket.AF_INET6, address)
            if zone and not _zone_ok(zone):
                raise UapiError(errno.EINVAL, f"unknown zone in {value!r}")
            canonical = socket.inet_ntop(socket.AF_INET6, packed)
            return Endpoint(f"{canonical}%{zone}" if zone else canonical, port)
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        raise UapiError(errno.EINVAL, f"bad endpoint {value!r}") from None
    return Endpoint(host, port)


def _format_v6(packed: bytes) -> str:
    # Go netip formatting: RFC 5952, and ::ffff:a.b.c.d for IPv4-mapped addresses.
    if packed[:12] == _V4_MAPPED:
        return "::ffff:" + socket.inet_ntop(socket.AF_INET, packed[12:])
    return str(ipaddress.IPv6Address(packed))


def format_endpoint(endpoint: Endpoint | tuple[str, int]) -> str:
    host, port = endpoint[0], endpoint[1]
    if ":" not in host:
        return f"{host}:{port}"
    packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    return f"[{_format_v6(packed)}]:{port}"  # wireguard-go drops the zone


def parse_allowed_ip(value: str) -> Network:
    """``address/cidr``; host bits are cleared (as wireguard-go does)."""
    address, sep, prefix = value.partition("/")
    plen = _bounded(prefix.removeprefix("+"), 128) if sep and _PREFIX.fullmatch(prefix) else None
    if plen is None:
        raise UapiError(errno.EINVAL, f"bad allowed ip {value[:64]!r}")
    try:
        if ":" in address:
            raw = int.from_bytes(socket.inet_pton(socket.AF_INET6, address))
            if plen > 128:
                raise UapiError(errno.EINVAL, f"bad prefix length in {value!r}")
            return ipaddress.IPv6Network((raw, plen), strict=False)
        raw = int.from_bytes(socket.inet_pton(socket.AF_INET, address))
    except OSError:
        raise UapiError(errno.EINVAL, f"bad allowed ip {value!r}") from None
    if plen > 32:
        raise UapiError(errno.EINVAL, f"bad prefix length in {value!r}")
    return ipaddress.IPv4Network((raw, plen), strict=False)


def format_network(network: Network) -> str:
    if network.version == 4:
        return str(network)
    return f"{_format_v6(network.network_address.packed)}/{network.prefixlen}"


# ----------------------------------------------------------------- get


def render_get(device: Device, host: UapiHost) -> str:
    """The body of a get=1 answer, in wireguard-go's order and with its zero-value rules."""
    lines: list[str] = []
    add = lines.append
    if device.private_key is not None:
        add(f"private_key={device.private_key.hex()}")
    if host.listen_port:
        add(f"listen_port={host.listen_port}")
    if host.fwmark:
        add(f"fwmark={host.fwmark}")
    for peer in device.peers.values():
        add(f"public_key={peer.public_key.hex()}")
        add(f"preshared_key={peer.handshake.preshared_key.hex()}")
        add("protocol_version=1")
        if peer.endpoint is not None:
            add(f"endpoint={format_endpoint(peer.endpoint)}")
        sec, nsec = _split_time(peer.last_handshake)
        add(f"last_handshake_time_sec={sec}")
        add(f"last_handshake_time_nsec={nsec}")
        add(f"tx_bytes={peer.tx_bytes}")
        add(f"rx_bytes={peer.rx_bytes}")
        add(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.extend(
            "allowed_ip=" + format_network(n) for n in device.allowed_ips.entries_for(peer)
        )
    add("errno=0")
    return "\n".join(lines) + "\n\n"


def _split_time(when: float | None) -> tuple[int, int]:
    if when is None or when <= 0:
        return 0, 0
    ns = round(when * 1e9)
    return ns // 1_000_000_000, ns % 1_000_000_000


# ----------------------------------------------------------------- set


@dataclass
class _SetState:
    """One set transaction: the peer being configured and what to do when it is done."""

    peer: Peer | None = None
    in_peers: bool = False  # after the first public_key, interface keys are errors
    skip: bool = False  # peer removed, ours, or update_only and absent
    created: bool = False


_INTERFACE_KEYS = frozenset({"private_key", "listen_port", "fwmark", "replace_peers"})


@dataclass
class UapiConnection:
    """The request parser of one UAPI connection (xplatform: requests may follow each other)."""

    device: Device
    host: UapiHost
    closed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _mode: str = "idle"  # idle | get | set | skip
    _get_error: int = 0
    _set: _SetState = field(default_factory=_SetState)
    _out: Batch = field(default_factory=Batch)

    def feed(self, data: bytes, now: float, max_output: int | None = None) -> tuple[bytes, Batch]:
        """Consume bytes; return the answer bytes to send and what the device asks the
        shell to do (keepalives, staged packets released by a new endpoint...).

        With ``max_output``, parsing stops once the answers reach that many bytes; the rest
        stays buffered (:attr:`pending`) for the next call, so one client's thousand
        pipelined get=1 requests cost one slice of work at a time."""
        out: list[str] = []
        self._buffer += data
        start = 0
        buffer = self._buffer
        produced = 0
        while not self.closed and (max_output is None or produced < max_output):
            end = buffer.find(b"\n", start)
            if end < 0 or end - start > MAX_LINE:
                break
            line = bytes(buffer[start:end])
            start = end + 1
            answer = self._line(line, now)
            if answer:
                out.append(answer)
                produced += len(answer)
        del buffer[:start]
        if len(buffer) > MAX_LINE and not self.closed:
            buffer.clear()
            self.closed = True
            out.append(f"errno=-{errno.EIO}\n\n")
        batch, self._out = self._out, Batch()
        return "".join(out).encode(), batch

    @property
    def pending(self) -> bool:
        """Whether a whole line waits to be parsed (after a ``max_output`` stop)."""
        return not self.closed and b"\n" in self._buffer

    def _line(self, raw: bytes, now: float) -> str:
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            line = "\ufffd"  # never a valid key or value
        mode = self._mode
        if mode == "idle":
            if line == "get=1":
                self._mode, self._get_error = "get", 0
            elif line == "set=1":
                self._mode, self._set = "set", _SetState()
            else:
                self.closed = True  # wireguard-go closes on an unknown operation
            return ""
        if mode == "skip":
            if not line:
                self._mode = "idle"
            return ""
        if mode == "get":
            if line:
                self._get_error = self._get_error or (errno.EINVAL if "=" in line else errno.EPROTO)
                return ""
            self._mode = "idle"
            if self._get_error:
                return f"errno=-{self._get_error}\n\n"
            return render_get(self.device, self.host)
        # set
        if not line:
            self._mode = "idle"
            self._end_peer(now)
            return "errno=0\n\n"
        try:
            key, sep, value = line.partition("=")
            if not sep:
                raise UapiError(errno.EPROTO, "a line without '='")
            try:
                self._set_line(key, value, now)
            except (ValueError, OverflowError) as exc:  # a value no check above foresaw
                raise UapiError(errno.EINVAL, str(exc)) from None
        except UapiError as exc:
            self._end_peer(now)
            self._mode = "skip"
            return f"errno=-{exc.code}\n\n"
        return ""

    def _set_line(self, key: str, value: str, now: float) -> None:
        device, state = self.device, self._set
        if key in _INTERFACE_KEYS:
            if state.in_peers:
                raise UapiError(errno.EINVAL, f"{key} after public_key")
            if key == "private_key":
                private = _key(value)
                device.set_private_key(None if private == bytes(32) else private)
            elif key == "listen_port":
                port = _uint(value, 0xFFFF)
                try:
                    self.host.set_listen_port(port)
                except OSError as exc:
                    raise UapiError(exc.errno or errno.EIO, str(exc)) from None
            elif key == "fwmark":
                mark = _uint(value, 0xFFFFFFFF)
                try:
                    self.host.set_fwmark(mark)
                except OSError as exc:
                    raise UapiError(exc.errno or errno.EIO, str(exc)) from None
            else:
                _true(value)
                for public in list(device.peers):
                    device.remove_peer(public)
            return
        if key == "public_key":
            public = _key(value)
            self._end_peer(now)
            state.in_peers = True
            state.skip = public == device.public_key  # wireguard-go ignores our own key
            state.peer, state.created = None, False
            if not state.skip:
                existing = device.peers.get(public)
                state.created = existing is None
                state.peer = existing or device.add_peer(public)
            return
        if not state.in_peers:
            raise UapiError(errno.EINVAL, f"unknown interface key {key!r}")
        peer = state.peer
        if key == "update_only":
            _true(value)
            if state.created and peer is not None:
                device.remove_peer(peer.public_key)
                state.peer, state.skip = None, True
        elif key == "remove":
            _true(value)
            if peer is not None:
                device.remove_peer(peer.public_key)
                state.peer, state.skip = None, True
        elif key == "preshared_key":
            psk = _key(value)
            if peer is not None:
                device.set_preshared_key(peer, psk)
        elif key == "endpoint":
            endpoint = parse_endpoint(value)
            if peer is not None:
                device.set_endpoint(peer, endpoint, now, self._out)
        elif key == "persistent_keepalive_interval":
            interval = _uint(value, 0xFFFF)
            if peer is not None:
                device.set_persistent_keepalive(peer, interval, now, self._out)
        elif key == "replace_allowed_ips":
            _true(value)
            if peer is not None:
                device.clear_allowed_ips(peer)
        elif key == "allowed_ip":
            network = parse_allowed_ip(value)
            if peer is not None:
                device.add_allowed_ip(peer, network)
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(errno.EINVAL, f"unsupported protocol version {value!r}")
        else:
            raise UapiError(errno.EINVAL, f"unknown peer key {key!r}")

    def _end_peer(self, now: float) -> None:
        """A peer section ends: what was staged goes out if it can (netlink.c set_peer ends
        with wg_packet_send_staged_packets; wireguard-go's handlePostConfig likewise)."""
        peer = self._set.peer
        if peer is not None and peer.public_key in self.device.peers:
            self.device.send_staged(peer, now, self._out)


def request(device: Device, host: UapiHost, text: str, now: float = 0.0) -> str:
    """Answer one or more whole requests (a convenience for tests and tools)."""
    connection = UapiConnection(device, host)
    answer, _ = connection.feed(text.encode(), now)
    return answer.decode()
