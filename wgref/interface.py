"""`wgref IFNAME`: a userspace WireGuard interface driven by the stock `wg` (like wireguard-go).

One thread, one epoll loop over the TUN fd, the UDP sockets (IPv4 and IPv6, bound to the
listen port), the UAPI listener ``/var/run/wireguard/IFNAME.sock`` and its connections, with
timeouts from :meth:`Device.next_timer`. The sockets stay in the namespace where wgref was
started when the link is moved elsewhere; deleting the link, removing the socket file,
SIGTERM or SIGINT stop the daemon.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

from . import __version__
from .checks import ALL_CHECKS, Checks
from .device import Device, destination_address
from .eventloop import EventLoop, serve_long_lived, setup_logging
from .icmp import ErrorRateLimit, unreachable, wants_error
from .keylog import KeyLogWriter
from .results import Batch, DropReason, Endpoint
from .routes import RouteCache, RouteMtus
from .tun import DEFAULT_MTU, Tun, TunGone
from .uapi import UapiConnection
from .uapi_server import SOCKET_DIR, UapiServer, open_listener
from .udp import RECV_BATCH, BatchReceiver, UdpSockets

__all__ = ["SOCKET_DIR", "Interface", "main"]

BATCH = 64  # TUN frames / recvmmsg calls per readable fd per loop iteration
HOUSEKEEPING = 1.0  # seconds between MTU polls and liveness checks

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
        self.loop = EventLoop()
        try:
            self.routes: RouteCache | None = RouteCache()
        except OSError as exc:  # no rtnetlink: sources stay until a send fails
            log.error("route lookups unavailable: %s", exc)
            self.routes = None
        self.udp = UdpSockets(self._source_gone, self.routes)
        # What the shell itself dropped or sent, by reason (the core counts its own drops).
        self.counters: Counter[str] = Counter()
        self._icmp_limit = ErrorRateLimit()
        self._icmp_sources: dict[bytes, tuple[bytes, float]] = {}
        self._raw: dict[int, socket.socket] = {}  # IP version -> raw socket in the TUN's netns
        self._raw_netns = 0
        # Our own outer datagrams coming back through the TUN (a routing loop) are only
        # possible while the link is in the sockets' namespace.
        self._loop_guard = True
        self._port_bytes = b""
        # Routes into the link with an MTU of their own (padding follows them).
        self._route_mtus: RouteMtus | None = None
        self._route_mtus_netns = 0
        try:
            self.set_listen_port(0)  # wireguard-go binds a random port at start
            listener, self.socket_path = open_listener(name)
        except BaseException:
            self.udp.close()
            if self.routes is not None:
                self.routes.close()
            self.loop.close()
            self.tun.close()
            raise
        self._socket_ino = os.stat(self.socket_path).st_ino
        self.uapi = UapiServer(
            self.loop,
            listener,
            lambda: UapiConnection(self.device, self),
            self._refresh_mtu,
            self._flush,
        )
        self.loop.add(self.tun.fd, self._on_tun)
        if self.routes is not None:
            self.loop.add(self.routes.fileno(), self._routes_changed)

    # ----------------------------------------------------------------- UAPI host

    @property
    def listen_port(self) -> int:
        return self.udp.port

    @property
    def fwmark(self) -> int:
        return self.udp.mark

    def set_listen_port(self, port: int) -> None:
        """Rebind both sockets; 0 picks a random port free for IPv4 and IPv6."""
        if port and port == self.udp.port:
            return
        for sock in self.udp.sockets():
            self.loop.remove(sock.fileno())
        self.udp.bind(port)
        self._port_bytes = self.udp.port.to_bytes(2, "big")
        for fd, receiver in self.udp.receivers.items():
            self.loop.add(fd, functools.partial(self._read_udp, receiver))
        log.debug("UDP bind has been updated (port %d)", self.udp.port)

    def set_fwmark(self, mark: int) -> None:
        self.udp.set_mark(mark)

    # ----------------------------------------------------------------- I/O

    def _flush(self, out: Batch) -> None:
        """Write the batch's packets to the TUN together (so TCP segments coalesce) and send
        each run of datagrams to one endpoint together (UDP_SEGMENT), from its remembered
        local address."""
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
        send = self.udp.send
        for destination, datagrams in out.sends:
            send(destination, datagrams)

    def _routes_changed(self, _mask: int) -> None:
        assert self.routes is not None
        self.routes.changed()

    def _source_gone(self, endpoint: Endpoint) -> None:
        """A send from a peer's remembered source failed: forget it (kernel socket.c
        send4/send6 clear ``src4``/``src6`` and route again)."""
        self.counters["source-cleared"] += 1
        for peer in self.device.peers.values():
            if peer.endpoint == endpoint:
                self.device.clear_endpoint_source(peer)

    def _is_own_datagram(self, packet: bytes) -> bool:
        """Whether a packet read from the TUN is one of our own encrypted datagrams, routed
        back into the tunnel (a route to a peer's endpoint through this interface). The
        kernel refuses to send it in the first place (socket.c send4: ``rt->dst.dev ==
        skb->dev``, "Avoiding routing loop"); we see it once and drop it."""
        if len(packet) < 28:
            return False
        if packet[0] == 0x45:
            return packet[9] == 17 and packet[20:22] == self._port_bytes
        if packet[0] >> 4 == 6:
            return packet[6] == 17 and packet[40:42] == self._port_bytes
        return False

    def _on_tun(self, mask: int) -> None:
        if mask & (select.EPOLLERR | select.EPOLLHUP):
            self.tun.check()
        device, read = self.device, self.tun.read_packets
        guard = self._loop_guard
        out = Batch()
        now = time.monotonic()
        pending = 0
        dropped = device.dropped
        unsendable = dropped[DropReason.NO_ROUTE] + dropped[DropReason.NO_ENDPOINT]
        for _ in range(BATCH):
            try:
                packets = read()
            except BlockingIOError:
                break
            except TunGone:
                raise
            except OSError as exc:
                raise TunGone(exc.errno, "TUN read failed") from None
            if guard and len(packets) == 1 and self._is_own_datagram(packets[0]):
                self.counters["routing-loop"] += 1
                log.debug("Avoiding routing loop: our own datagram came back through the TUN")
                continue
            mtus = self._route_mtus
            if mtus is not None and mtus.active:
                self._send_by_route_mtu(mtus, packets, now, out)
            else:
                device.send_packets(packets, now, out)
            pending += len(packets)
            if dropped[DropReason.NO_ROUTE] + dropped[DropReason.NO_ENDPOINT] != unsendable:
                unsendable = dropped[DropReason.NO_ROUTE] + dropped[DropReason.NO_ENDPOINT]
                self._unreachable(packets, now)
            if pending >= RECV_BATCH:  # send a TSO frame's worth at once
                self._flush(out)
                out, pending = Batch(), 0
        if out:
            self._flush(out)

    def _send_by_route_mtu(
        self, mtus: RouteMtus, packets: list[bytes], now: float, out: Batch
    ) -> None:
        """send_packets with the padding limit of each packet's route (kernel send.c
        calculate_skb_padding: ``dst_mtu(skb_dst(skb))``); runs with the same MTU together."""
        device = self.device
        link_mtu = device.mtu
        mtu_for = mtus.mtu_for
        i, n = 0, len(packets)
        while i < n:
            destination = destination_address(packets[i])
            mtu = link_mtu if destination is None else mtu_for(destination, link_mtu)
            j = i + 1
            while j < n:
                following = destination_address(packets[j])
                if following != destination and (
                    following is None or mtu_for(following, link_mtu) != mtu
                ):
                    break
                j += 1
            device.mtu = mtu
            try:
                device.send_packets(packets[i:j], now, out)
            finally:
                device.mtu = link_mtu
            i = j

    def _open_route_mtus(self) -> None:
        """(Re)open the route watch in the link's namespace (it may have moved)."""
        ino = self.tun.netns_inode()
        if self._route_mtus is not None and ino == self._route_mtus_netns:
            return
        if self._route_mtus is not None:
            self.loop.remove(self._route_mtus.fileno())
            self._route_mtus.close()
            self._route_mtus = None
        try:
            mtus = RouteMtus(lambda f, k, p: self.tun.open_socket(f, k, p)[0])
        except OSError as exc:
            log.error("route MTUs unavailable: %s", exc)
            return
        self._route_mtus, self._route_mtus_netns = mtus, ino
        self.loop.add(mtus.fileno(), self._route_mtus_changed)
        self._refresh_route_mtus()

    def _route_mtus_changed(self, _mask: int) -> None:
        if self._route_mtus is not None:
            self._route_mtus.changed()
            self._refresh_route_mtus()

    def _refresh_route_mtus(self) -> None:
        mtus = self._route_mtus
        if mtus is None:
            return
        try:
            mtus.refresh(self.tun.ifindex(), self.device.mtu)
        except TunGone:
            raise
        except OSError as exc:
            log.debug("route dump: %s", exc)

    def _unreachable(self, packets: list[bytes], now: float) -> None:
        """ICMP errors for the packets no peer can take (kernel device.c wg_xmit)."""
        lookup = self.device.allowed_ips.lookup
        for packet in packets:
            destination = destination_address(packet)
            if destination is None:
                continue
            peer = lookup(destination)
            if (peer is not None and peer.endpoint is not None) or not wants_error(packet):
                continue
            sender = packet[12:16] if len(destination) == 4 else packet[8:24]
            try:
                source = self._icmp_source(sender, now)
            except OSError as exc:
                log.debug("no route back to %s for an ICMP error: %s", sender.hex(), exc)
                continue
            if not self._icmp_limit.allow(sender, source == sender, now):
                continue
            error = unreachable(packet, source)
            if error is not None:
                self._inject(error, sender)

    def _icmp_source(self, sender: bytes, now: float) -> bytes:
        """The address routing in the TUN's namespace picks to reach ``sender``, which is
        where the kernel's icmp_send sends its errors from (icmp_route_lookup, saddr 0).
        Kept for a second per sender, so a flood costs one lookup a second."""
        cached = self._icmp_sources.get(sender)
        if cached is not None and now - cached[1] < 1.0:
            return cached[0]
        family = socket.AF_INET if len(sender) == 4 else socket.AF_INET6
        probe, _ = self.tun.open_socket(family, socket.SOCK_DGRAM)
        with probe:
            probe.connect((socket.inet_ntop(family, sender), 9))
            source = socket.inet_pton(family, probe.getsockname()[0].partition("%")[0])
        if len(self._icmp_sources) > 1024:
            self._icmp_sources.clear()
        self._icmp_sources[sender] = (source, now)
        return source

    def _inject(self, packet: bytes, destination: bytes) -> None:
        """Send a whole IP packet we built into the TUN's namespace. A raw socket, not a TUN
        write: the kernel drops packets arriving on an interface with one of its own addresses
        as source (fib_validate_source), while a locally sent one is delivered."""
        version = 4 if len(destination) == 4 else 6
        ino = self.tun.netns_inode()
        if ino != self._raw_netns:
            for old in self._raw.values():
                old.close()
            self._raw.clear()
            self._raw_netns = ino
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        try:
            sock = self._raw.get(version)
            if sock is None:
                sock, _ = self.tun.open_socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                sock.setblocking(False)
                self._raw[version] = sock
            sock.sendto(packet, (socket.inet_ntop(family, destination), 0))
            self.counters["icmp-unreachable"] += 1
        except OSError as exc:
            log.debug("ICMP error to %s: %s", destination.hex(), exc)

    def _read_udp(self, receiver: BatchReceiver, _mask: int = 0) -> None:
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

    def _on_timer(self, now: float) -> None:
        out = Batch()
        self.device.handle_timers(now, out)
        self._flush(out)

    def _refresh_mtu(self) -> None:
        try:
            mtu = self.tun.mtu()
        except TunGone:
            raise
        except OSError:
            return
        if mtu != self.device.mtu:
            self.device.mtu = mtu
            self._refresh_route_mtus()

    def _housekeeping(self, _now: float) -> None:
        self.tun.check()  # raises TunGone once the link is deleted
        self.uapi.resume()
        self._refresh_mtu()
        self._loop_guard = self.tun.in_own_namespace()
        self._open_route_mtus()
        try:
            alive = os.stat(self.socket_path).st_ino == self._socket_ino
        except FileNotFoundError:
            alive = False
        if not alive:
            log.debug("UAPI socket removed")
            self.loop.stop()

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until the link or the socket is gone, or SIGTERM/SIGINT."""
        log.debug("Device started")
        try:
            self._loop_guard = self.tun.in_own_namespace()
            self._open_route_mtus()
            self.loop.run(self.device.next_timer, self._on_timer, self._housekeeping, HOUSEKEEPING)
        except TunGone:
            log.debug("Interface deleted")
        finally:
            log.debug("Shutting down")
            self.close()

    def close(self) -> None:
        self.uapi.close()
        try:
            if os.stat(self.socket_path).st_ino == self._socket_ino:
                os.unlink(self.socket_path)
        except OSError:
            pass
        self.udp.close()
        for watch in (self.routes, self._route_mtus):
            if watch is not None:
                watch.close()
        for sock in self._raw.values():
            sock.close()
        self._raw.clear()
        self.loop.close()
        self.tun.close()
        if self.keylog is not None:
            self.keylog.close()


def _raise_file_limit() -> None:
    """Every UAPI client holds a descriptor: raise the soft limit to the hard one (as Go's
    runtime does for wireguard-go since Go 1.19)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str], *, checks: Checks = ALL_CHECKS) -> int:
    """``wgref [-f|--foreground] [--keylog PATH] IFNAME``: 0 once the interface is up.
    ``checks`` is for negative controls only (harness/probes/sloppy.py)."""
    options = parse_args(argv)
    if isinstance(options, int):
        return options
    setup_logging(options.name)
    log.debug("Starting wgref version %s", __version__)
    _raise_file_limit()
    # Before the UAPI socket appears: from then on a SIGTERM must find the loop's handler,
    # and the collection here can take a while.
    serve_long_lived()
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
