"""`wgref IFNAME`: a userspace WireGuard interface driven by the stock `wg` (like wireguard-go).

One thread, one epoll loop over the TUN fd, the UDP sockets (IPv4 and IPv6, bound to the
listen port), the UAPI listener ``/var/run/wireguard/IFNAME.sock`` and its connections, with
timeouts from :meth:`Device.next_timer`. The sockets stay in the namespace where wgref was
started when the link is moved elsewhere; deleting the link, removing the socket file,
SIGTERM or SIGINT stop the daemon.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from . import __version__
from .checks import ALL_CHECKS, Checks
from .device import Device
from .keylog import KeyLogWriter
from .loglevel import level_from_env
from .peer import Address
from .results import Batch, Endpoint
from .tun import DEFAULT_MTU, Tun, TunGone
from .uapi import UapiConnection

__all__ = ["SOCKET_DIR", "Interface", "main"]

SOCKET_DIR = "/var/run/wireguard"
SO_MARK = 36  # linux/socket.h
BATCH = 64  # TUN frames / recvmmsg calls per readable fd per loop iteration
RECV_BATCH = 64  # datagrams (or UDP_GRO trains) per recvmmsg call
HOUSEKEEPING = 1.0  # seconds between MTU polls and liveness checks
SOCKET_BUFFER = 4 << 20
UAPI_SEND_TIMEOUT = 5.0

log = logging.getLogger("wgref.interface")

USAGE = """\
Usage: wgref [-f/--foreground] [--keylog PATH] INTERFACE-NAME

Creates TUN device INTERFACE-NAME and serves the WireGuard UAPI on
/var/run/wireguard/INTERFACE-NAME.sock; configure it with `wg`.
  -f, --foreground   stay in the foreground (default: fork once the interface is up)
  --keylog PATH      append a Wireshark key log of every handshake (mode 0600)
Environment: LOG_LEVEL=verbose|error|silent (as wireguard-go; debug = verbose; default error),
             WG_KEYLOG_FILE=PATH (Wireshark key log, like --keylog).
"""


class _Stop(Exception):
    pass


@dataclass
class Options:
    name: str
    foreground: bool = False
    keylog: str | None = None


def parse_args(argv: list[str]) -> Options | int:
    """Options, or an exit status when the arguments were answered (--help) or bad."""
    foreground, keylog, names = False, os.environ.get("WG_KEYLOG_FILE") or None, []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-f", "--foreground"):
            foreground = True
        elif arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        elif arg in ("-v", "--version"):
            sys.stdout.write(f"wgref v{__version__}\n\nUserspace WireGuard in Python.\n")
            return 0
        elif arg == "--keylog" and args:
            keylog = args.pop(0)
        elif arg.startswith("--keylog="):
            keylog = arg.partition("=")[2]
        elif arg == "--keylog":
            sys.stderr.write(f"wgref: --keylog needs a PATH\n{USAGE}")
            return 2
        elif arg.startswith("-") and arg != "-":
            sys.stderr.write(f"wgref: unknown option {arg}\n{USAGE}")
            return 2
        else:
            names.append(arg)
    if len(names) != 1:
        got = " ".join(names) if names else "none"
        sys.stderr.write(f"wgref: expected one INTERFACE-NAME, got {got}\n{USAGE}")
        return 2
    return Options(names[0], foreground, keylog)


class _Formatter(logging.Formatter):
    """wireguard-go's format: ``DEBUG: (wg0) 2006/01/02 15:04:05 message``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"%(levelname)s: ({name}) %(asctime)s %(message)s", "%Y/%m/%d %H:%M:%S")


def setup_logging(name: str) -> None:
    # wireguard-go logs to stdout, in the foreground and once daemonised.
    level = level_from_env("error")
    root = logging.getLogger("wgref")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(name))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _open_uapi_listener(name: str) -> tuple[socket.socket, str]:
    """Bind /var/run/wireguard/NAME.sock (dir 0755, socket 0700 like wireguard-go)."""
    os.makedirs(SOCKET_DIR, mode=0o755, exist_ok=True)
    path = os.path.join(SOCKET_DIR, f"{name}.sock")
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket: nobody listens
        else:
            probe.close()
            raise OSError(errno.EADDRINUSE, f"{path} is in use")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    listener.setblocking(False)
    return listener, path


# ----------------------------------------------------------------- UDP batching
#
# Per-datagram syscalls dominated the profile (recvfrom, sendto), so datagrams move in batches:
# recvmmsg(2) (not in Python's socket module, hence ctypes) fills preallocated buffers, and
# UDP_GRO lets the kernel hand over a train of same-size datagrams from one sender as one
# buffer; sendmsg with UDP_SEGMENT (GSO) sends a run of same-size datagrams to one endpoint in
# one call, the kernel cutting them apart (the wire sees ordinary datagrams). Linux
# include/uapi/linux/udp.h and Documentation/networking/segmentation-offloads.rst.

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MSG_DONTWAIT = 0x40
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on older kernels (128 since 6.x)
GSO_MAX_BYTES = 0xFFFF - 20 - 8  # a UDP payload in an IPv4 packet
RECV_SIZE = 1 << 16  # one datagram, or one UDP_GRO train
_NAME_SIZE = 28  # sizeof(struct sockaddr_in6)
_CONTROL_SIZE = 32  # >= CMSG_SPACE(sizeof(int)), 24 on 64-bit Linux

# Native layouts (C alignment): struct mmsghdr is a msghdr (name, namelen, iov, iovlen,
# control, controllen, flags) and msg_len; struct iovec; a cmsghdr (len, level, type) with an
# int after CMSG_ALIGN.
_MMSGHDR = struct.Struct("@PIPNPNi0PI0P")
_IOVEC = struct.Struct("@PN")
_CMSG_GRO = struct.Struct("@Nii0Ni")
_SOCKADDR_IN = struct.Struct("=H2s4s")  # family, port (network order), address
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")  # family, port, flowinfo, address, scope id

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


def _address_of(buffer: bytearray | mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _sockaddr(name: bytes) -> Address:
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


class BatchReceiver:
    """recvmmsg(2) on one non-blocking UDP socket with UDP_GRO, into preallocated buffers."""

    def __init__(self, sock: socket.socket, count: int = RECV_BATCH) -> None:
        self.sock = sock
        self.count = count
        with contextlib.suppress(OSError):  # an old kernel: one datagram per message
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        # An anonymous mapping, not a bytearray: its pages become resident only once the
        # kernel writes to them (a 1500-byte datagram touches one page of its 64 KiB slot).
        self._data = mmap.mmap(-1, count * RECV_SIZE)
        self._view = memoryview(self._data)
        self._names = bytearray(count * _NAME_SIZE)
        self._controls = bytearray(count * _CONTROL_SIZE)
        self._iovecs = bytearray(count * _IOVEC.size)
        self._headers = bytearray(count * _MMSGHDR.size)
        data, names = _address_of(self._data), _address_of(self._names)
        controls, iovecs = _address_of(self._controls), _address_of(self._iovecs)
        for i in range(count):
            _IOVEC.pack_into(self._iovecs, i * _IOVEC.size, data + i * RECV_SIZE, RECV_SIZE)
            _MMSGHDR.pack_into(
                self._headers,
                i * _MMSGHDR.size,
                names + i * _NAME_SIZE,
                _NAME_SIZE,
                iovecs + i * _IOVEC.size,
                1,
                controls + i * _CONTROL_SIZE,
                _CONTROL_SIZE,
                0,
                0,
            )
        # The kernel rewrites namelen, controllen, flags and msg_len: restored after each call.
        self._pristine = bytes(self._headers)
        self._address = _address_of(self._headers)
        self._last_name = b""
        self._last_source = Endpoint("", 0)

    def receive(self) -> tuple[list[bytes], list[Endpoint]]:
        """The datagrams waiting (up to ``count`` messages) and their sources; empty lists
        when there are none. OSError for a socket error (e.g. an ICMP error reported)."""
        n = _recvmmsg(self.sock.fileno(), self._address, self.count, MSG_DONTWAIT, None)
        if n <= 0:
            code = ctypes.get_errno()
            if n == 0 or code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return [], []
            raise OSError(code, os.strerror(code))
        datagrams: list[bytes] = []
        sources: list[Endpoint] = []
        view, names = self._view, self._names
        last_name, source = self._last_name, self._last_source
        used = n * _MMSGHDR.size
        for i, (_, namelen, _, _, _, controllen, _, length) in enumerate(
            _MMSGHDR.iter_unpack(memoryview(self._headers)[:used])
        ):
            start = i * _NAME_SIZE
            name = bytes(names[start : start + namelen])
            if name != last_name:
                last_name, source = name, Endpoint(*_sockaddr(name))
            base = i * RECV_SIZE
            if controllen:
                at = i * _CONTROL_SIZE
                _, level, kind, gso_size = _CMSG_GRO.unpack_from(self._controls, at)
                if level == SOL_UDP and kind == UDP_GRO and 0 < gso_size < length:
                    # A UDP_GRO train: same-size datagrams, the last maybe shorter.
                    for offset in range(base, base + length, gso_size):
                        end = min(offset + gso_size, base + length)
                        datagrams.append(bytes(view[offset:end]))
                        sources.append(source)
                    continue
            datagrams.append(bytes(view[base : base + length]))
            sources.append(source)
        self._headers[:used] = self._pristine[:used]
        self._last_name, self._last_source = last_name, source
        return datagrams, sources


def send_batch(sock: socket.socket, destination: Address, datagrams: list[bytes]) -> None:
    """Send ``datagrams`` to one destination in order, as few sendmsg calls as UDP_SEGMENT
    allows: a run of equal sizes (the last may be shorter) up to 64 datagrams or 64 KiB goes
    in one call. Raises the first OSError after trying the rest."""
    error: OSError | None = None
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
                sock.sendto(datagrams[i], destination)
            else:
                segment = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                try:
                    sock.sendmsg(datagrams[i:j], segment, 0, destination)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                        raise
                    # No GSO for this route (e.g. datagrams larger than its MTU): one by one.
                    for datagram in datagrams[i:j]:
                        sock.sendto(datagram, destination)
        except OSError as exc:
            error = error or exc
        i = j
    if error is not None:
        raise error


class Interface:
    """The I/O shell around a :class:`Device`; also the UAPI host (listen port, fwmark)."""

    def __init__(
        self,
        name: str,
        keylog: str | None = None,
        mtu: int = DEFAULT_MTU,
        *,
        checks: Checks = ALL_CHECKS,
    ) -> None:
        self.tun = Tun(name, mtu)
        self.name = name
        self.device = Device(
            mtu=self.tun.mtu(),
            epoch_offset=time.time() - time.monotonic(),
            keylog=keylog is not None,
            checks=checks,
        )
        self.keylog = KeyLogWriter(keylog) if keylog is not None else None
        self._sock4: socket.socket | None = None
        self._sock6: socket.socket | None = None
        self._receivers: dict[int, BatchReceiver] = {}
        self._port = 0
        self._fwmark = 0
        self._epoll = select.epoll()
        self._connections: dict[int, tuple[socket.socket, UapiConnection]] = {}
        self._stop = False
        try:
            self.set_listen_port(0)  # wireguard-go binds a random port at start
            self.listener, self.socket_path = _open_uapi_listener(name)
        except BaseException:
            self._close_udp()
            self.tun.close()
            raise
        self._socket_ino = os.stat(self.socket_path).st_ino
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._epoll.register(self.tun.fd, select.EPOLLIN)
        self._epoll.register(self.listener.fileno(), select.EPOLLIN)
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)

    # ----------------------------------------------------------------- UAPI host

    @property
    def listen_port(self) -> int:
        return self._port

    @property
    def fwmark(self) -> int:
        return self._fwmark

    def _close_udp(self) -> None:
        for sock in (self._sock4, self._sock6):
            if sock is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(sock.fileno())
                sock.close()
        self._sock4 = self._sock6 = None
        self._receivers.clear()
        self._port = 0

    def _udp_socket(self, family: socket.AddressFamily, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            if self._fwmark:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self._fwmark)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def set_listen_port(self, port: int) -> None:
        """Rebind both sockets; 0 picks a random port free for IPv4 and IPv6."""
        if port and port == self._port:
            return
        self._close_udp()
        for _attempt in range(1 if port else 16):
            sock4 = self._udp_socket(socket.AF_INET, port)
            actual = sock4.getsockname()[1]
            try:
                sock6: socket.socket | None = self._udp_socket(socket.AF_INET6, actual)
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
        self._sock4, self._sock6, self._port = sock4, sock6, actual
        for sock in (sock4, sock6):
            if sock is not None:
                self._receivers[sock.fileno()] = BatchReceiver(sock)
                self._epoll.register(sock.fileno(), select.EPOLLIN)
        log.debug("UDP bind has been updated (port %d)", actual)

    def set_fwmark(self, mark: int) -> None:
        for sock in (self._sock4, self._sock6):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self._fwmark = mark

    # ----------------------------------------------------------------- I/O

    def _flush(self, out: Batch) -> None:
        """Write the batch's packets to the TUN together (so TCP segments coalesce) and send
        each run of datagrams to one endpoint together (UDP_SEGMENT)."""
        if out.secrets and self.keylog is not None:
            for secrets in out.secrets:
                self.keylog.write_handshake(
                    secrets.local_static_private,
                    secrets.remote_static_public,
                    secrets.local_ephemeral_private,
                    secrets.preshared_key,
                )
        if out.packets:
            try:
                self.tun.write_packets(out.packets)
            except OSError as exc:
                log.debug("TUN write: %s", exc)
        sock4, sock6 = self._sock4, self._sock6
        for destination, datagrams in out.sends:
            sock = sock6 if ":" in destination.host else sock4
            if sock is not None:
                try:
                    send_batch(sock, destination.address, datagrams)
                except OSError as exc:
                    log.debug("sendto %s: %s", destination, exc)

    def _read_tun(self) -> None:
        device, read = self.device, self.tun.read_packets
        out = Batch()
        now = time.monotonic()
        pending = 0
        for _ in range(BATCH):
            try:
                packets = read()
            except BlockingIOError:
                break
            except TunGone:
                raise
            except OSError as exc:
                raise TunGone(exc.errno, "TUN read failed") from None
            device.send_packets(packets, now, out)
            pending += len(packets)
            if pending >= RECV_BATCH:  # send a TSO frame's worth at once
                self._flush(out)
                out, pending = Batch(), 0
        if out:
            self._flush(out)

    def _read_udp(self, receiver: BatchReceiver) -> None:
        device = self.device
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                datagrams, sources = receiver.receive()
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("recvmmsg: %s", exc)
                continue
            if not datagrams:
                break
            out = Batch()
            device.receive_datagrams(datagrams, sources, now, out)
            if out:
                self._flush(out)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.settimeout(UAPI_SEND_TIMEOUT)
            self._connections[conn.fileno()] = (conn, UapiConnection(self.device, self))
            self._epoll.register(conn.fileno(), select.EPOLLIN)

    def _serve(self, fd: int) -> None:
        conn, session = self._connections[fd]
        try:
            data = conn.recv(1 << 16)
        except OSError:
            data = b""
        if data:
            self.device.mtu = self._poll_mtu()
            answer, out = session.feed(data, time.monotonic())
            if out:
                self._flush(out)
            try:
                if answer:
                    conn.sendall(answer)
            except OSError:
                session.closed = True
        if not data or session.closed:
            self._epoll.unregister(fd)
            del self._connections[fd]
            conn.close()

    def _poll_mtu(self) -> int:
        try:
            return self.tun.mtu()
        except TunGone:
            raise
        except OSError:
            return self.device.mtu

    def _housekeeping(self) -> None:
        self.tun.check()  # raises TunGone once the link is deleted
        self.device.mtu = self._poll_mtu()
        try:
            alive = os.stat(self.socket_path).st_ino == self._socket_ino
        except FileNotFoundError:
            alive = False
        if not alive:
            log.debug("UAPI socket removed")
            raise _Stop

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop = True

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until the link or the socket is gone, or SIGTERM/SIGINT."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        device = self.device
        tun_fd, listener_fd, wake_fd = self.tun.fd, self.listener.fileno(), self._wake_r.fileno()
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        log.debug("Device started")
        try:
            while not self._stop:
                now = time.monotonic()
                deadline = device.next_timer()
                timeout = next_housekeeping - now
                if deadline is not None:
                    timeout = min(timeout, deadline - now)
                events = self._epoll.poll(max(0.0, timeout))
                receivers = self._receivers
                for fd, mask in events:
                    if fd == tun_fd:
                        if mask & (select.EPOLLERR | select.EPOLLHUP):
                            self.tun.check()
                        self._read_tun()
                    elif fd in receivers:
                        self._read_udp(receivers[fd])
                    elif fd == listener_fd:
                        self._accept()
                    elif fd == wake_fd:
                        while True:
                            try:
                                if not self._wake_r.recv(64):
                                    break
                            except BlockingIOError:
                                break
                    elif fd in self._connections:
                        self._serve(fd)
                now = time.monotonic()
                deadline = device.next_timer()
                if deadline is not None and deadline <= now:
                    self._flush(device.handle_timer(now))
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING
                    self._housekeeping()
        except TunGone:
            log.debug("Interface deleted")
        except _Stop:
            pass
        finally:
            log.debug("Shutting down")
            self.close()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for conn, _ in self._connections.values():
            conn.close()
        self._connections.clear()
        try:
            if os.stat(self.socket_path).st_ino == self._socket_ino:
                os.unlink(self.socket_path)
        except OSError:
            pass
        self.listener.close()
        self._close_udp()
        self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()
        self.tun.close()
        if self.keylog is not None:
            self.keylog.close()


def main(argv: list[str], *, checks: Checks = ALL_CHECKS) -> int:
    """``wgref [-f|--foreground] [--keylog PATH] IFNAME``: 0 once the interface is up.
    ``checks`` is for negative controls only (harness/probes/sloppy.py)."""
    options = parse_args(argv)
    if isinstance(options, int):
        return options
    setup_logging(options.name)
    log.debug("Starting wgref version %s", __version__)
    try:
        interface = Interface(options.name, options.keylog, checks=checks)
    except (OSError, ValueError) as exc:
        log.error("Failed to create interface %s: %s", options.name, exc)
        sys.stderr.write(f"wgref: {options.name}: {exc}\n")
        return 1
    log.debug("UAPI listener started")
    if not options.foreground:
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() > 0:
            return 0  # like wireguard-go: the parent returns once the interface is up
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        # stdout/stderr stay as they are: wireguard-go keeps logging to them
    try:
        interface.run()
    except Exception:  # pragma: no cover - reported, not hidden
        log.exception("fatal error")
        if not options.foreground:
            os._exit(1)
        return 1
    if not options.foreground:
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
