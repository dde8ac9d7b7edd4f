"""A single-peer tunnel in the shape of BoringTun's ``Tunn`` API, over the same core.

People porting a client built on BoringTun (the seed's Windows client is one) will recognise
it: build it from keys, feed it IP packets from the host (:meth:`Tunnel.write`), datagrams from
the network (:meth:`Tunnel.read`), call :meth:`Tunnel.tick` about every 100 ms, and act on
one result at a time. As with BoringTun, after a :class:`WriteToNetwork` from ``read``, call
``read(b"")`` again until it returns :class:`Done`: a handshake can release queued packets.

It wraps :class:`wgref.device.Device` with one peer that owns every address; it is not a
second implementation.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .device import Device
from .results import Batch, Dropped, Endpoint, HandshakeCompleted

_ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# The caller owns the socket; when it does not say where a datagram came from, the core gets
# this stable opaque source (the cookie code hashes it; it is never parsed as an address).
PEER_ADDRESS = Endpoint("peer", 0)


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing to do."""


@dataclass(frozen=True, slots=True)
class Error:
    """The input was dropped; ``reason`` is the core's drop reason."""

    reason: str  # a wgref.results.DropReason (a str enum)


@dataclass(frozen=True, slots=True)
class WriteToNetwork:
    """Send ``datagram`` to the peer."""

    datagram: bytes


@dataclass(frozen=True, slots=True)
class WriteToTunnelV4:
    """Deliver an IPv4 ``packet`` whose source is ``source`` to the host."""

    packet: bytes
    source: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class WriteToTunnelV6:
    packet: bytes
    source: ipaddress.IPv6Address


TunnResult = Done | Error | WriteToNetwork | WriteToTunnelV4 | WriteToTunnelV6


@dataclass(frozen=True, slots=True)
class TunnelStats:
    """BoringTun's ``stats()``: time since the last handshake (None if never), bytes sent and
    received, estimated loss on the current session (0.0-1.0) and the handshake RTT (ms)."""

    time_since_last_handshake: float | None
    tx_bytes: int
    rx_bytes: int
    estimated_loss: float
    estimated_rtt_ms: int | None


def prefixed_indices(prefix: int) -> Callable[[Callable[[int], bool]], int]:
    """Session indices ``prefix << 8 | n`` (BoringTun's 24-bit index prefix)."""
    if not 0 <= prefix < 1 << 24:
        raise ValueError("the index prefix is 24 bits")
    counter = itertools.count()

    def allocate(taken: Callable[[int], bool]) -> int:
        for _ in range(256):
            index = (prefix << 8) | (next(counter) & 0xFF)
            if not taken(index):
                return index
        raise RuntimeError("all 256 session indices of this tunnel are in use")

    return allocate


class Tunnel:
    """BoringTun's ``Tunn``. ``now`` is the caller's monotonic clock; TAI64N timestamps come
    from ``wall_clock`` (default :func:`time.time`): noise.c wg_noise_handshake_create_initiation
    stamps initiations with tai64n_now(), wall time (BoringTun likewise), so a restarted
    client's initiations are newer than those it sent before the restart."""

    def __init__(
        self,
        static_private: bytes,
        peer_public: bytes,
        preshared_key: bytes | None = None,
        persistent_keepalive: int | None = None,
        index: int = 0,
        *,
        mtu: int = 1420,
        epoch_offset: float = 0.0,
        wall_clock: Callable[[], float] | None = time.time,
    ) -> None:
        self.device = Device(
            static_private,
            mtu=mtu,
            epoch_offset=epoch_offset,
            wall_clock=wall_clock,
            index_allocator=prefixed_indices(index),
        )
        self.peer = self.device.add_peer(
            peer_public,
            preshared_key=preshared_key,
            endpoint=PEER_ADDRESS,
            persistent_keepalive=persistent_keepalive or 0,
            allowed_ips=_ANY,
        )
        self._pending: deque[TunnResult] = deque()
        self._handshake_at: float | None = None  # caller's clock, for stats()

    def _results(self, out: Batch, now: float) -> TunnResult:
        """Queue the batch's datagrams and packets; the first result, or the drop reason
        when the call produced nothing else."""
        pending = self._pending
        if any(isinstance(e, HandshakeCompleted) for e in out.events):
            self._handshake_at = now
        for _, datagrams in out.sends:
            pending.extend(WriteToNetwork(d) for d in datagrams)
        for packet in out.packets:
            source = ipaddress.ip_address(packet[12:16] if packet[0] >> 4 == 4 else packet[8:24])
            if isinstance(source, ipaddress.IPv4Address):
                pending.append(WriteToTunnelV4(packet, source))
            else:
                pending.append(WriteToTunnelV6(packet, source))
        if pending:
            return pending.popleft()
        drops = [e.reason for e in out.events if isinstance(e, Dropped)]
        return Error(drops[-1]) if drops else Done()

    def write(self, packet: bytes, now: float) -> TunnResult:
        """Encapsulate an IP packet from the host (``encapsulate``)."""
        return self._results(self.device.send_packet(packet, now), now)

    def read(self, datagram: bytes, now: float, source: Endpoint | None = None) -> TunnResult:
        """Decapsulate a datagram from the peer (``decapsulate``); ``b""`` drains the queue.
        ``source`` is where it came from (BoringTun's ``src_addr``): under load, cookies are
        bound to it; without one, a stable opaque source stands in."""
        if not datagram:
            return self._pending.popleft() if self._pending else Done()
        # The peer's endpoint follows the source (the core roams); the caller sends every
        # WriteToNetwork to its one peer socket whatever it is.
        out = self.device.receive_datagram(datagram, source or PEER_ADDRESS, now)
        return self._results(out, now)

    def tick(self, now: float) -> TunnResult:
        """Run due timers (``update_timers``); call about every 100 ms."""
        deadline = self.device.next_timer()
        if deadline is None or deadline > now:
            return self._pending.popleft() if self._pending else Done()
        return self._results(self.device.handle_timer(now), now)

    def force_handshake(self, now: float) -> TunnResult:
        """Send a handshake initiation now (``format_handshake_initiation(force_resend)``)."""
        return self._results(self.device.initiate_handshake(self.peer, now, force=True), now)

    def stats(self, now: float) -> TunnelStats:
        peer = self.peer
        since = None if self._handshake_at is None else now - self._handshake_at
        keypair = peer.keypairs.current
        loss = 0.0
        if keypair is not None and keypair.receive_top >= 0:
            expected = keypair.receive_top + 1
            loss = max(0.0, 1.0 - keypair.receive_count / expected)
        rtt = None if peer.rtt is None else int(peer.rtt * 1000)
        return TunnelStats(since, peer.tx_bytes, peer.rx_bytes, loss, rtt)
