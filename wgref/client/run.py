"""The transparent client's run loop: NFQUEUE in, WireGuard over UDP out, replies injected.

Outbound, a queued packet's flow is decided once (destination in AllowedIPs minus
DisallowedIPs, then the owning application); a bypass flow's packet is accepted with a mark
that nftables turns into a conntrack mark, so the rest of that flow never leaves the kernel. A
tunnelled packet gets the tunnel address as source (and a free port if needed), the MSS clamp
and new checksums, goes to :meth:`Device.send_packets`, and the original is dropped. A
tunnelled TCP connection's or UDP flow's first packet is accepted instead, marked so that
nftables routes it and the flow's later packets to the discard device (:mod:`.sink`), where
the client reads them (:mod:`.tap`) and tunnels them as it does queued packets.
Inbound, the client's UDP socket reads the peer's datagrams; each delivered packet gets its
flow's host address and port back and is injected through a raw socket (``IPPROTO_RAW``,
header included) addressed to that host: for a local address the kernel loops it back and
receives it like any packet (prerouting, input, the socket); for a forwarded flow it routes it
out to the host on the LAN. The raw and UDP sockets carry :data:`OWN_MARK`, never queued.

The data path works in batches, as the TUN interface does: TCP is queued with
``NFQA_CFG_F_GSO`` (one queued super-packet, cut into tunnel-sized segments here), a read's
queued packets come in one recvmmsg and its verdicts go back in one message
(``NFQNL_MSG_VERDICT_BATCH``), the packets go through :meth:`Device.send_packets` and leave as
UDP_SEGMENT trains; datagrams are read with recvmmsg (and UDP_GRO) and opened by
:meth:`Device.receive_datagrams`, and in-order TCP segments of a flow are merged before
injection (userspace GRO; for the host itself through ``lo``,
:class:`~wgref.client.loopback.LoopbackInjector`), and a read's pure ACKs that a later one of
their flow supersedes are left out (:func:`offload.thin_acks`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..allowedips import AllowedIPs
from ..allowedips_calc import subtract
from ..device import Device
from ..eventloop import EventLoop
from ..offload import ZERO_VNET_HDR, finish_checksum
from ..peer import Peer
from ..results import (
    Batch,
    Dropped,
    DropReason,
    Endpoint,
    HandshakeCompleted,
    HandshakeInitiated,
)
from ..udp import SO_MARK, BatchReceiver, UdpSockets
from . import cgroup, conntrack, nft, offload, packet, procs, sink, status
from .config import ClientConfig, PeerConfig
from .flows import BYPASS, TUNNEL, Flow, FlowTable
from .loopback import LoopbackInjector, send_waiting
from .nfqueue import HOOK_FORWARD, HOOK_PREROUTING, NF_ACCEPT, NfQueue, QueuedPacket
from .tap import PacketTap

log = logging.getLogger("wgref.client")

BATCH = 64
SEND_BATCH = 64  # packets sealed and sent together (a super-packet's worth and more)
# Reads of the queue per wake-up while it has packets, as the TUN interface reads its queue
# until it is empty: each read finds only the two or three packets the host's TCP Small Queues
# let through before their verdicts (verdicts.py), so one read per turn of the event loop paid
# the loop, and a UDP read of a few ACKs, for every few packets. Measured (tcp-up, wireguard-go
# server, thread CPU time per queued packet over that of cutting it): 8 reads 3.70-3.71, one
# read 3.89, 4.6 % less CPU per byte; the UDP socket is read a quarter as often.
QUEUE_READS = 8
HOUSEKEEPING = 5.0  # flow expiry
WATCH = 1.0  # the missing-handshake warning
DEFAULT_QUEUE = 30567
HANDSHAKE_WARNING = 15.0
TCP_SYN = 0x02


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)
def _sockaddr(address: bytes) -> tuple[str, int]:
    """A raw socket's destination for a packed address (a flow's host: few of them)."""
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6,
                            address), 0


@dataclass(eq=False)
class ClientPeer:
    """A [Peer] of the config, its device peer and the prefixes tunnelled to it."""

    config: PeerConfig
    peer: Peer
    tunnelled: list[Network]
    no_handshake_warned: bool = False


class Client:
    def __init__(self, config: ClientConfig, *, queue: int = DEFAULT_QUEUE,
                 status_path: str | None = None, forward: bool | None = None,
                 kill_switch: bool | None = None, discard_device: bool = True) -> None:
        """``discard_device``: tunnelled TCP connections' and UDP flows' packets are routed
        to the discard devices (:mod:`.sink`) and read there rather than queued."""
        self.config = config
        self.forward = config.forward if forward is None else forward
        self.kill_switch = config.kill_switch if kill_switch is None else kill_switch
        self.queue_number = queue
        self.use_sink = discard_device
        self.status_path = status_path or status.socket_path(config.path)
        self.started = time.monotonic()
        self.device = Device(config.private_key, mtu=config.mtu,
                             epoch_offset=time.time() - time.monotonic())
        # Cryptokey routing (WP 2): each peer takes its AllowedIPs minus its DisallowedIPs;
        # the device and the flow decisions look destinations up in the same prefixes.
        self.peers: list[ClientPeer] = []
        self.routes: AllowedIPs[ClientPeer] = AllowedIPs()
        for peer_config in config.peers:
            assert peer_config.endpoint is not None
            tunnelled = subtract(peer_config.allowed_ips, config.peer_disallowed_ips(peer_config))
            peer = self.device.add_peer(
                peer_config.public_key,
                preshared_key=peer_config.preshared_key,
                endpoint=peer_config.endpoint,
                persistent_keepalive=peer_config.persistent_keepalive,
                allowed_ips=tunnelled,
            )
            entry = ClientPeer(peer_config, peer, tunnelled)
            self.peers.append(entry)
            for network in tunnelled:
                self.routes.insert(network, entry)
        self.tunnelled: list[Network] = [
            *ipaddress.collapse_addresses(
                n for e in self.peers for n in e.tunnelled if isinstance(n, ipaddress.IPv4Network)),
            *ipaddress.collapse_addresses(
                n for e in self.peers for n in e.tunnelled if isinstance(n, ipaddress.IPv6Network)),
        ]
        self.tunnel_src: dict[int, bytes] = {}
        for version in (4, 6):
            address = config.tunnel_address(version)
            if address is not None:
                self.tunnel_src[version] = address.ip.packed
        self.dns = self._dns_servers()
        self.mss = {4: config.mtu - 40, 6: config.mtu - 60}
        self.flows = FlowTable()
        self.reassembler = packet.Reassembler()
        self.counters = {"queued": 0, "injected": 0, "unsolicited": 0, "inject_errors": 0,
                         "malformed": 0, "merged_through_lo": 0,
                         "answers_through_lo": 0, "acks_thinned": 0, "from_discard_device": 0}
        self._psk_warned = 0.0
        self._first_attempt: float | None = None
        self._sockets: list[socket.socket] = []
        self.udp = UdpSockets(self._source_gone)
        self.queue: NfQueue | None = None  # TCP, super-packets whole
        self.queue_other: NfQueue | None = None  # everything else
        # tunnelled TCP connections' and UDP flows' packets, one packet socket on each of
        # the discard devices while they are there (sink.py)
        self.taps: list[PacketTap] = []
        self.status: socket.socket | None = None
        self.tables_installed = False
        self.exec_cgroup: str | None = None  # its path, while the client owns it
        self.loopback: LoopbackInjector | None = None
        self.loop = EventLoop()
        self._next_expiry = 0.0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- setup

    def _marked(self, family: socket.AddressFamily, kind: socket.SocketKind,
                proto: int = 0) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        self._sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, nft.OWN_MARK)
        sock.setblocking(False)
        return sock

    def _open(self) -> None:
        self.udp.set_mark(nft.OWN_MARK)
        self.udp.bind(self.config.listen_port)
        if self.udp.sock6 is None:
            log.debug("no IPv6 UDP socket")
        self.listen_port = self.udp.port
        self.raw4 = self._marked(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.raw6: socket.socket | None
        try:
            self.raw6 = self._marked(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError as exc:
            log.debug("no IPv6 raw socket: %s", exc)
            self.raw6 = None
        self.loopback = LoopbackInjector.open(nft.OWN_MARK)
        if self.loopback is not None:
            self._sockets.append(self.loopback.sock)
        self.status = status.listen(self.status_path)
        stale = nft.present()
        if stale:
            log.info("removing tables left by an earlier run: %s", ", ".join(stale))
        exec_id: int | None = None
        try:
            self.exec_cgroup, exec_id = cgroup.create(cgroup.name_for(self.config.path))
        except OSError as exc:
            log.warning("no cgroup for `wgref client exec` (%s): only AllowedApps select "
                        "applications", exc)
        # Bind the queue before any rule sends packets to it.
        self.queue = NfQueue(self.queue_number, gso=True, verdict_helper=True)
        self.queue_other = NfQueue(self.queue_number + 1)
        sinking = self.use_sink and self._open_sink()
        self.tables_installed = True
        nft.install(nft.Rules(
            self.queue_number,
            [n for n in self.tunnelled if isinstance(n, ipaddress.IPv4Network)]
            if 4 in self.tunnel_src else [],
            [n for n in self.tunnelled if isinstance(n, ipaddress.IPv6Network)]
            if 6 in self.tunnel_src else [],
            forward=self.forward,
            kill_switch=self.kill_switch,
            exec_cgroup=exec_id,
            dns4=4 in self.dns,
            dns6=6 in self.dns,
            sink=sinking,
        ))
        for tap in self.taps:
            self.loop.add(tap.fileno(), functools.partial(self._on_tap, tap))
        for queue in (self.queue, self.queue_other):
            self.loop.add(queue.fileno(), functools.partial(self._on_queue, queue))
        self.loop.add(self.status.fileno(), self._on_status)
        for fd, receiver in self.udp.receivers.items():
            self.loop.add(fd, functools.partial(self._on_udp, receiver))

    def _open_sink(self) -> bool:
        """The discard devices and the packet sockets that read what is sent to them; False,
        and the flows are queued like other packets, when any of them cannot be had."""
        try:
            sink.install(nft.SINK_MARK, tuple(sorted(self.tunnel_src)))
            for device in sink.DEVICES:
                self.taps.append(PacketTap(device))
        except (OSError, sink.SinkError) as exc:
            log.warning("no discard device (%s): the packets of tunnelled TCP connections and "
                        "UDP flows are queued, as other packets are", exc)
            self._close_taps()
            with contextlib.suppress(sink.SinkError):
                sink.remove(nft.SINK_MARK)  # what of it was made
            return False
        log.debug("discard devices %s: tunnelled TCP connections and UDP flows are read "
                  "from them", ", ".join(sink.DEVICES))
        return True

    def _close_taps(self) -> None:
        for tap in self.taps:
            tap.close()
        self.taps = []

    def _dns_servers(self) -> dict[int, bytes]:
        """The first ``DNS =`` server of each IP version that a peer's AllowedIPs cover
        (other entries are search domains, or servers the tunnel cannot reach)."""
        servers: dict[int, bytes] = {}
        for entry in self.config.dns:
            try:
                address = ipaddress.ip_address(entry)
            except ValueError:
                continue  # a search domain: the host's resolver configuration keeps those
            if address.version in servers:
                continue
            if address.version not in self.tunnel_src:
                log.warning("DNS = %s: no IPv%d Address to send from: not used", entry,
                            address.version)
            elif self.routes.lookup(address.packed) is None:
                log.warning("DNS = %s is not inside any peer's AllowedIPs (minus DisallowedIPs):"
                            " not used", entry)
            else:
                servers[address.version] = address.packed
                log.info("DNS = %s: queries of tunnelled applications go there through the "
                         "tunnel; the host's resolver configuration is not touched", entry)
        return servers

    # ----------------------------------------------------------------- decisions

    def _decide(self, info: packet.Info, hook: int, mark: int = 0) -> tuple[str, str, bytes]:
        """(decision, reason, DNS server it is redirected to or b"") for a flow's first
        packet."""
        source = self.tunnel_src.get(info.version)
        if source is None:
            return BYPASS, f"no IPv{info.version} Address", b""
        entry = self.routes.lookup(info.dst)
        dns = self.dns.get(info.version)
        if (dns is not None and info.dport == 53 and info.dst != dns
                and info.proto in (packet.TCP, packet.UDP)):
            # A DNS query to another resolver (the host's, inside AllowedIPs or not): a
            # tunnelled application's goes to the tunnel's DNS server instead, an untunnelled
            # one's where it was sent.
            entry = self.routes.lookup(dns)
            decision, reason = self._decide_app(info, hook, mark, entry)
            if decision == TUNNEL:
                return decision, f"DNS to {procs.address_text(dns)}: {reason}", dns
            return decision, reason, b""
        if entry is None:
            return BYPASS, "destination not in AllowedIPs minus DisallowedIPs", b""
        return (*self._decide_app(info, hook, mark, entry), b"")

    def _decide_app(self, info: packet.Info, hook: int, mark: int,
                    entry: ClientPeer | None) -> tuple[str, str]:
        """(decision, reason) for a flow to a destination of ``entry``."""
        if entry is None:
            return BYPASS, "destination not in AllowedIPs minus DisallowedIPs"
        if info.proto == packet.TCP and not info.tcp_flags & TCP_SYN:
            return BYPASS, "TCP connection older than the client"
        if hook in (HOOK_FORWARD, HOOK_PREROUTING):
            return (TUNNEL, "forwarded") if self.forward else (BYPASS, "forwarded")
        if mark == nft.EXEC_MARK:  # set in the kernel by the socket's cgroup
            return TUNNEL, "started by wgref client exec"
        apps = self.config.peer_allowed_apps(entry.config)
        denied = self.config.peer_disallowed_apps(entry.config)
        if not apps and not denied:
            return TUNNEL, "all applications"
        inodes = procs.socket_inodes(info.proto, info.version, info.src, info.sport,
                                     info.dst, info.dport)
        owners = procs.owners(inodes[:4]) if inodes else []
        who = ",".join(str(p) for p in owners) or "unknown process"
        if apps:
            if procs.any_matches(apps, owners):
                return TUNNEL, f"{who} in AllowedApps"
            return BYPASS, f"{who} not in AllowedApps"
        if procs.any_matches(denied, owners):
            return BYPASS, f"{who} in DisallowedApps"
        return TUNNEL, f"{who} not in DisallowedApps"

    @staticmethod
    def _describe(info: packet.Info) -> str:
        name = {packet.TCP: "tcp", packet.UDP: "udp", packet.ICMP: "icmp",
                packet.ICMPV6: "icmpv6"}.get(info.proto, f"protocol {info.proto}")
        src, dst = procs.address_text(info.src), procs.address_text(info.dst)
        if info.version == 6:
            src, dst = f"[{src}]", f"[{dst}]"
        return f"{name} {src}:{info.sport} -> {dst}:{info.dport}"

    # ----------------------------------------------------------------- outbound

    def _read_queue(self, queue: NfQueue, now: float) -> int:
        """One read of a queue (how many packets it had) in two passes: first every packet's
        verdict (sent at once, so the kernel frees what is dropped and the host's TCP sends on
        while this process encrypts), then the tunnelled packets cut, and sealed and sent
        SEND_BATCH at a time (measured against sealing each super-packet apart, 0.86x against
        0.80x of the TUN interface, and against one burst per read, no different)."""
        batch = queue.receive(BATCH)
        self.counters["queued"] += len(batch)
        tunnelled: list[tuple[Flow, QueuedPacket, packet.Info]] = []
        packets: list[bytes] = []
        for item in batch:
            try:
                work = self._queued(queue, item, now, packets)
            except Exception:  # a bug must not take the host's networking down with it
                log.exception("dropped a queued packet that could not be handled")
                queue.drop(item.packet_id)
                continue
            if work is not None:
                tunnelled.append(work)
        queue.flush()
        for flow, item, info in tunnelled:
            try:
                self._outbound(flow, item.payload, info, item.gso, packets,
                               valid=not item.csum_partial)
            except Exception:
                log.exception("dropped a queued packet that could not be handled")
            if len(packets) >= SEND_BATCH:
                self._send(packets, now)
                packets = []
        self._send(packets, now)
        return len(batch)

    def _send(self, packets: list[bytes], now: float) -> None:
        """Seal ``packets`` and send the datagrams (UDP_SEGMENT trains), with whatever else
        the device asks for."""
        out = Batch()
        if packets:
            self.device.send_packets(packets, now, out)
        if out:
            self._flush(out, now)

    def _queued(self, queue: NfQueue, item: QueuedPacket, now: float,
                packets: list[bytes]) -> tuple[Flow, QueuedPacket, packet.Info] | None:
        """The verdict for a queued packet; for one to tunnel, its flow and parse, for
        :meth:`_outbound` (an ICMP error about a tunnelled flow goes into ``packets``)."""
        info = packet.parse(item.payload)
        if info is None:  # malformed, or cut short (over NFQUEUE's copy range): fail closed
            self.counters["malformed"] += 1
            queue.drop(item.packet_id)
            return None
        if info.fragment:  # conntrack reassembles before the hooks: not the host's own
            queue.verdict(item.packet_id, NF_ACCEPT)
            return None
        if (info.proto in (packet.ICMP, packet.ICMPV6) and not info.sport and not info.dport
                and self._icmp_error(queue, item, info, packets)):
            return None
        key = (info.proto, info.src, info.sport, info.dst, info.dport)
        flow = self.flows.outbound.get(key)
        if flow is None:
            decision, reason, nat_dst = self._decide(info, item.hook, item.mark)
            flow = Flow(info.proto, info.version, info.src, info.sport, info.dst,
                        info.dport, decision, reason,
                        nat_src=self.tunnel_src.get(info.version, b""),
                        forwarded=item.hook in (HOOK_FORWARD, HOOK_PREROUTING),
                        nat_dst=nat_dst)
            self.flows.add(flow, now)
            log.info("%s: %s (%s)", self._describe(info), decision, reason)
        flow.last_seen = now
        flow.packets += 1
        if flow.decision == BYPASS:
            queue.verdict(item.packet_id, NF_ACCEPT, nft.BYPASS_MARK)
            return None
        if self.taps and info.proto in nft.SUNK and not flow.forwarded:
            # on to the discard device, where the client reads it (sink.py), as it does the
            # flow's later packets: none of them is queued
            queue.verdict(item.packet_id, NF_ACCEPT, nft.TUNNEL_MARK)
            return None
        queue.drop(item.packet_id, pure_ack=packet.pure_ack(item.payload, info))
        if info.proto == packet.TCP and info.tcp_flags & 0x05:  # FIN or RST
            flow.closing = True
        return flow, item, info

    def _icmp_error(self, queue: NfQueue, item: QueuedPacket, info: packet.Info,
                    packets: list[bytes]) -> bool:
        """An ICMP error from the host to a tunnelled destination (about a packet that came
        through the tunnel, say a port unreachable): tunnelled by its destination, from the
        tunnel address, with the quoted packet translated back as the peer sent it. False for
        ICMP messages that are not errors."""
        data = item.payload
        if data[info.header_len] not in packet.ICMP_ERRORS[info.version]:
            return False
        source = self.tunnel_src.get(info.version)
        if source is None or self.routes.lookup(info.dst) is None:
            queue.verdict(item.packet_id, NF_ACCEPT)
            return True
        queue.drop(item.packet_id)
        quoted = packet.quoted(data, info)
        flow = None if quoted is None else self.flows.outbound.get(
            (quoted.proto, quoted.dst, quoted.dport, quoted.src, quoted.sport))
        if quoted is not None and flow is not None and flow.decision == TUNNEL:
            port = flow.nat_sport if flow.nat_sport != flow.sport else None
            packets.append(packet.rewrite_icmp_error_out(data, info, quoted, flow.nat_src, port))
        else:
            packets.append(packet.rewrite(data, info, src=source))
        log.debug("%s: ICMP error tunnelled", self._describe(info))
        return True

    def _outbound(self, flow: Flow, data: bytearray | memoryview, info: packet.Info, gso: bool,
                  packets: list[bytes], *, valid: bool = False) -> None:
        """``valid``: the packet's checksums are complete (updated for the rewrite, not
        summed again)."""
        mtu = self.config.mtu
        sport = flow.nat_sport if flow.nat_sport != flow.sport else None
        if gso and info.proto == packet.TCP and len(data) > mtu:
            # A super-packet: the new source once, then segments that fit the tunnel and the
            # MSS the far end announced (the kernel does not pass the sender's gso_size).
            tcp_off = info.header_len
            th = tcp_off + (data[tcp_off + 12] >> 4) * 4
            size = mtu - th
            if flow.peer_mss:
                size = min(size, flow.peer_mss - (th - tcp_off - 20))
            # the headers rewritten in place: the 64 KiB are copied once, into the segments
            try:
                data[:th] = packet.rewrite(bytes(data[:th]), info, src=flow.nat_src,
                                           sport=sport, dst=flow.nat_dst or None,
                                           checksums=False)  # (a view: ValueError past its end)
                packets += offload.segment(data, tcp_off, max(size, 8))
            except ValueError:
                log.debug("dropped a malformed TCP super-packet")
            return
        if isinstance(data, memoryview):  # a packet in the receive buffer (tap.py)
            data = bytearray(data)
        translation = flow.outbound_translation()
        if valid and len(data) <= mtu and translation.applies(info):
            translation.apply(data, info)  # the client's own copy of the queued packet
            packets.append(bytes(data))
            return
        rewritten = packet.rewrite(data, info, src=flow.nat_src, sport=sport,
                                   dst=flow.nat_dst or None, mss=self.mss[info.version],
                                   valid=valid)
        if len(rewritten) <= mtu:
            packets.append(rewritten)
            return
        # Do what a path with a link of this MTU would: IPv4 with DF (the host sets it only
        # on packets that fit its path MTU, or when the socket asks for it) gets
        # "fragmentation needed", so the host learns the MTU and fragments, or fails the
        # send, itself (RFC 1191); IPv6 is fragmented by its source only (RFC 8200 5): the
        # host's own packets are (as the host would for an interface of this MTU), forwarded
        # ones and TCP get "packet too big". IPv4 without DF is fragmented.
        if info.version == 4:
            refuse = bool(rewritten[6] & 0x40)
        else:
            refuse = flow.forwarded or info.proto == packet.TCP
        if refuse:
            original = packet.parse(data)  # ``info`` now describes the rewritten packet
            if original is not None:
                self._inject(packet.too_big(data, original, mtu, flow.nat_src), flow.src)
            return
        packets += packet.fragment(rewritten, info, mtu)

    def _read_tap(self, tap: PacketTap, now: float) -> int:
        """One read of the packets of tunnelled TCP connections and UDP flows sent to the
        discard device (how many)."""
        batch = tap.receive(BATCH)
        self.counters["from_discard_device"] += len(batch)
        flows = self.flows.outbound
        mtu = self.config.mtu
        packets: list[bytes] = []
        for data, csum_start, csum_offset in batch:
            try:
                info = packet.parse(data)
                if info is None or info.proto not in nft.SUNK or info.fragment:
                    self.counters["malformed"] += 1
                    continue
                flow = flows.get((info.proto, info.src, info.sport, info.dst, info.dport))
                if flow is None or flow.decision != TUNNEL:
                    flow = self._readopt(info, now)
                    if flow is None:
                        continue
                flow.last_seen = now
                flow.packets += 1
                if info.tcp_flags & 0x05:  # FIN or RST
                    flow.closing = True
                if len(data) > mtu:  # a TCP super-packet, its segments summed as they are
                    # cut; anything else summed again, then fragmented or refused
                    self._outbound(flow, data, info, True, packets)
                else:
                    copy = bytearray(data)
                    if csum_start >= 0:  # left to the device (tap.py)
                        finish_checksum(copy, csum_start, csum_offset)
                    self._outbound(flow, copy, info, False, packets, valid=True)
            except Exception:
                log.exception("dropped a packet of the discard device that could not be "
                              "handled")
            if len(packets) >= SEND_BATCH:
                self._send(packets, now)
                packets = []
        self._send(packets, now)
        return len(batch)

    def _readopt(self, info: packet.Info, now: float) -> Flow | None:
        """A flow for a packet of a connection the client no longer knows (its flow expired,
        or an earlier run of the client tunnelled it): conntrack marks it tunnelled, so it is
        tunnelled again."""
        source = self.tunnel_src.get(info.version)
        if source is None or self.routes.lookup(info.dst) is None:
            self.counters["unsolicited"] += 1
            return None
        flow = self.flows.add(Flow(info.proto, info.version, info.src, info.sport, info.dst,
                                   info.dport, TUNNEL, "conntrack marks it tunnelled",
                                   nat_src=source), now)
        log.info("%s: %s (%s)", self._describe(info), flow.decision, flow.reason)
        return flow

    # ----------------------------------------------------------------- inbound

    def _deliver(self, packets: list[bytes], now: float) -> None:
        """Packets from the tunnel: in-order TCP data segments of a flow merged first (they
        come out of an authenticated session, so nothing is checked that the AEAD tag did not
        already), then each given its flow's address back and injected. A merged packet is
        cut again for a forwarded flow (the LAN has its own MTU)."""
        inbound, mtu = self.flows.inbound, self.config.mtu
        # Each ACK injected costs this process the host's TCP work it sets off (the ACK
        # processed, the next segments sent through the output hooks to the queue); one per
        # flow per read does the work of several.
        thinned = offload.thin_acks(packets)
        self.counters["acks_thinned"] += len(packets) - len(thinned)
        for data, gso_size, whole_header, payloads in offload.merge(thinned):
            try:
                info = packet.parse(data)
                if not gso_size or info is None:
                    self._inbound(data, now, info)
                    continue
                flow = inbound.get((info.proto, info.src, info.sport, info.dst, info.dport))
                if flow is None:
                    self.counters["unsolicited"] += 1
                    continue
                flow.last_seen = now
                tcp_off = info.header_len
                th = len(whole_header)
                header = packet.rewrite(
                    whole_header, info, dst=flow.src, src=flow.dst if flow.nat_dst else None,
                    dport=flow.sport if flow.nat_sport != flow.sport else None,
                    checksums=False)
                if flow.forwarded:
                    whole = b"".join((header, *payloads))
                    for piece in offload.segment(whole, tcp_off, mtu - th):
                        self._inject(piece, flow.src)
                    continue
                if self.loopback is not None and flow.answered:
                    # Received on lo as a GSO packet with its checksum partial, as from a
                    # device with offloads: no checksum to compute or verify (the segments
                    # came out of an authenticated session).
                    head = bytearray(header)
                    offload.partial_tcp(head, tcp_off)
                    if self.loopback.send(
                            offload.vnet_header(info.version, tcp_off, th, gso_size,
                                                link=LoopbackInjector.LINK_HEADER), head,
                            payloads):
                        self.counters["injected"] += 1
                        self.counters["merged_through_lo"] += 1
                        continue
                buf = bytearray(header)
                for payload in payloads:
                    buf += payload
                offload.finish_tcp(buf, tcp_off)
                if self._inject(buf, flow.src):
                    self._answered(flow, buf[tcp_off + 13])
            except Exception:
                log.exception("dropped a packet from the tunnel that could not be handled")

    def _inbound(self, data: bytes, now: float, info: packet.Info | None) -> None:
        if info is None:
            return
        if info.fragment:
            whole = self.reassembler.add(data, info, now)
            if whole is None:
                return
            data = whole
            info = packet.parse(data)
            if info is None:
                return
        quoted = packet.quoted(data, info)
        if quoted is not None:
            key = (quoted.proto, quoted.dst, quoted.dport, quoted.src, quoted.sport)
            flow = self.flows.inbound.get(key)
            if flow is None:
                self.counters["unsolicited"] += 1
                return
            self._inject(packet.rewrite_icmp_error(data, info, quoted, flow.src, flow.sport),
                         flow.src)
            return
        flow = self.flows.inbound.get((info.proto, info.src, info.sport, info.dst, info.dport))
        if flow is None:
            self.counters["unsolicited"] += 1
            log.debug("unsolicited %s from the tunnel: dropped", self._describe(info))
            return
        flow.last_seen = now
        if info.proto == packet.TCP and info.tcp_flags & 0x05:
            flow.closing = True
        translation = flow.inbound_translation()
        rewritten: bytes | bytearray
        if translation.applies(info):
            rewritten = bytearray(data)
            translation.apply(rewritten, info)
        else:
            rewritten = packet.rewrite(
                data, info, dst=flow.src, src=flow.dst if flow.nat_dst else None,
                dport=flow.sport if flow.nat_sport != flow.sport else None,
                mss=self.mss[info.version], valid=True,  # the peer's checksums, as NAT keeps
            )
        if info.proto == packet.TCP and info.tcp_flags & 0x02:
            flow.peer_mss = packet.mss_option(rewritten, info) or 0
        if (flow.answered and self.loopback is not None
                and self.loopback.send(ZERO_VNET_HDR, rewritten, ())):
            self.counters["injected"] += 1
            self.counters["answers_through_lo"] += 1
            return
        if self._inject(rewritten, flow.src):
            self._answered(flow, info.tcp_flags)

    @staticmethod
    def _answered(flow: Flow, tcp_flags: int) -> None:
        """Note an answer that went through the raw socket. A TCP flow's packets from the
        tunnel go in through ``lo`` (:class:`LoopbackInjector`: not through the output hooks
        and back) once one such answer has started its conntrack entry and marked it
        (nft.py: the host's packets, in its reply direction, are then queued, not let out
        directly). A SYN-ACK does not start one: conntrack takes a connection up from the
        middle only from a plain ACK (nf_conntrack_proto_tcp.c, ``nf_conntrack_tcp_loose``).
        The host's own packets start none either: the queue drops them before conntrack
        confirms them."""
        if flow.proto == packet.TCP and not flow.forwarded and tcp_flags & 0x17 == 0x10:
            flow.answered = True

    def _inject(self, data: bytes | bytearray, destination: bytes) -> bool:
        """``data`` to the host through the raw socket (the output hooks, then ``lo``);
        whether it went."""
        sock = self.raw4 if len(destination) == 4 else self.raw6
        if sock is None:
            return False
        address = _sockaddr(destination)
        try:
            send_waiting(sock, lambda: sock.sendto(data, address))
            self.counters["injected"] += 1
        except OSError as exc:
            info = packet.parse(data)
            if exc.errno == errno.EMSGSIZE and info is not None and not info.fragment:
                for piece in packet.fragment(bytes(data), info, self.config.mtu):
                    with contextlib.suppress(OSError):
                        send_waiting(sock, functools.partial(sock.sendto, piece, address))
                self.counters["injected"] += 1
                return True
            self.counters["inject_errors"] += 1
            log.debug("inject to %s: %s", address[0], exc)
            return False
        return True

    # ----------------------------------------------------------------- the device

    def _flush(self, out: Batch, now: float) -> None:
        """Carry out what the device asked: packets injected, datagrams sent per endpoint
        (UDP_SEGMENT trains), events logged."""
        if out.packets:
            self._deliver(out.packets, now)
        send = self.udp.send
        for destination, datagrams in out.sends:
            send(destination, datagrams)
        for event in out.events:
            if isinstance(event, HandshakeInitiated):
                if self._first_attempt is None:
                    self._first_attempt = now
            elif isinstance(event, HandshakeCompleted):
                self._handshake_completed(event.peer)

    def _read_udp(self, receiver: BatchReceiver, now: float) -> None:
        device = self.device
        for _ in range(BATCH):
            try:
                datagrams, sources = receiver.receive()
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug("recvmmsg: %s", exc)
                continue
            if not datagrams:
                break
            out = Batch()
            device.receive_datagrams(datagrams, sources, now, out)
            if any(isinstance(e, Dropped) and e.reason is DropReason.DECRYPT_FAILED
                   for e in out.events):
                for data, source in zip(datagrams, sources, strict=True):
                    if data[:1] == b"\x02":
                        self._bad_response(source, now)
            if out:
                self._flush(out, now)

    def _bad_response(self, source: Endpoint, now: float) -> None:
        if now - self._psk_warned < 5.0 and self._psk_warned:
            return
        self._psk_warned = now
        log.error(
            "handshake response from %s:%s does not authenticate: the PresharedKey (or the "
            "peer's PublicKey) does not match the server's; no tunnel", source[0], source[1])

    def _handshake_completed(self, peer: Peer) -> None:
        for entry in self.peers:
            if entry.peer is peer:
                rtt = "" if peer.rtt is None else f" (rtt {peer.rtt * 1000:.1f} ms)"
                log.info("handshake with peer %s complete%s", entry.config.endpoint_text, rtt)
                entry.no_handshake_warned = False

    def _watch_handshake(self, now: float) -> None:
        for entry in self.peers:
            if (entry.peer.last_handshake is None and self._first_attempt is not None
                    and not entry.no_handshake_warned
                    and now - self._first_attempt > HANDSHAKE_WARNING):
                entry.no_handshake_warned = True
                log.error("no handshake with peer %s after %.0f s: is the endpoint reachable "
                          "and are the keys right?", entry.config.endpoint_text,
                          HANDSHAKE_WARNING)

    # ----------------------------------------------------------------- status

    def _peer_stats(self, entry: ClientPeer, now: float) -> dict[str, Any]:
        peer = entry.peer
        age = None if peer.last_handshake is None else (
            now + self.device.epoch_offset - peer.last_handshake)
        keypair = peer.keypairs.current
        loss = 0.0
        if keypair is not None and keypair.receive_top >= 0:
            loss = max(0.0, 1.0 - keypair.receive_count / (keypair.receive_top + 1))
        return {
            "peer": base64.b64encode(peer.public_key).decode(),
            "endpoint": f"{peer.endpoint[0]}:{peer.endpoint[1]}" if peer.endpoint else None,
            "allowed_ips": [str(n) for n in entry.tunnelled],
            "handshake_age": age,
            "rx_bytes": peer.rx_bytes,
            "tx_bytes": peer.tx_bytes,
            "estimated_loss": loss,
            "rtt_ms": None if peer.rtt is None else round(peer.rtt * 1000, 3),
        }

    def stats(self, now: float) -> dict[str, Any]:
        """The status document: the first peer's figures at the top level (as when the client
        had one peer), every peer's in ``peers``."""
        peers = [self._peer_stats(entry, now) for entry in self.peers]
        return {
            "config": self.config.path,
            "addresses": [str(a) for a in self.config.addresses],
            "listen_port": self.listen_port,
            **peers[0],
            "peers": peers,
            "flows_tunnel": self.flows.count(TUNNEL),
            "flows_bypass": self.flows.count(BYPASS),
            "dropped": dict(self.device.dropped),
            "kill_switch": self.kill_switch,
            "forward": self.forward,
            "exec_cgroup": os.path.basename(self.exec_cgroup) if self.exec_cgroup else None,
            "discard_devices": [tap.device for tap in self.taps],
            **self.counters,
            "discard_device_dropped": sum(tap.dropped() for tap in self.taps),
        }

    # ----------------------------------------------------------------- loop

    def _on_queue(self, queue: NfQueue, _mask: int) -> None:
        for _ in range(QUEUE_READS):
            if not self._read_queue(queue, time.monotonic()):
                break

    def _on_tap(self, tap: PacketTap, _mask: int) -> None:
        for _ in range(QUEUE_READS):
            if not self._read_tap(tap, time.monotonic()):
                break

    def _on_udp(self, receiver: BatchReceiver, _mask: int) -> None:
        self._read_udp(receiver, time.monotonic())

    def _on_status(self, _mask: int) -> None:
        assert self.status is not None
        status.answer(self.status, self.stats(time.monotonic()))

    def _on_timer(self, now: float) -> None:
        self._flush(self.device.handle_timer(now), now)

    def _housekeeping(self, now: float) -> None:
        self._watch_handshake(now)
        if now >= self._next_expiry:
            self._next_expiry = now + HOUSEKEEPING
            self.flows.expire(now)

    def _source_gone(self, endpoint: Endpoint) -> None:
        """A send from a peer's remembered source failed: forget it (kernel socket.c
        send4/send6 clear ``src4``/``src6`` and route again)."""
        for entry in self.peers:
            if entry.peer.endpoint == endpoint:
                self.device.clear_endpoint_source(entry.peer)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (:class:`~wgref.eventloop.EventLoop`)."""
        assert self.queue is not None and self.status is not None
        shown = ", ".join(str(n) for n in self.tunnelled[:6]) or "nothing"
        if len(self.tunnelled) > 6:
            shown += f" and {len(self.tunnelled) - 6} more prefixes"
        log.info("client up: queue %d, UDP port %d, tunnelling %s", self.queue_number,
                 self.listen_port, shown)
        # Handshake at once, as the seed's client does, rather than on the first packet.
        for entry in self.peers:
            self._flush(self.device.initiate_handshake(entry.peer, time.monotonic()),
                        time.monotonic())
        self._next_expiry = time.monotonic() + HOUSEKEEPING
        # Housekeeping every WATCH seconds: the missing-handshake warning is due to the second.
        self.loop.run(self.device.next_timer, self._on_timer, self._housekeeping, WATCH)
        log.info("stopping")

    def close(self) -> None:
        """Undo everything: the tables (unless the kill switch keeps them), the queue, the
        sockets and the status socket. Safe to call more than once."""
        kept = False
        if self.tables_installed:
            self.tables_installed = False
            if self.kill_switch:
                kept = True
                log.info("kill switch: the nftables tables (and the discard device) stay, so "
                         "tunnelled destinations are blocked until the next start or "
                         "`wgref client --cleanup`")
            else:
                try:
                    nft.remove()
                except nft.NftError as exc:
                    log.error("could not remove the nftables tables: %s", exc)
                try:
                    conntrack.forget_marks()
                except OSError as exc:
                    log.warning("the conntrack marks of bypass flows stay: %s", exc)
        if self.taps:
            self._close_taps()
            if not kept:
                try:
                    sink.remove(nft.SINK_MARK)
                except sink.SinkError as exc:
                    log.error("could not remove the discard devices: %s", exc)
        for queue in (self.queue, self.queue_other):
            if queue is not None:
                queue.close()
        self.queue = self.queue_other = None
        if self.status is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.status_path)
            self.status.close()
            self.status = None
        if self.exec_cgroup is not None:
            if not cgroup.remove(self.exec_cgroup):
                log.info("%s stays: programs started by `wgref client exec` still run in it",
                         self.exec_cgroup)
            self.exec_cgroup = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self.udp.close()
        self.loop.close()
