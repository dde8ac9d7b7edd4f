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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .device import Action, Deliver, Device, SendDatagram
from .peer import Address

_ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# The caller owns the socket; the core still wants an address for the peer.
PEER_ADDRESS: Address = ("peer", 0)


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing to do."""


@dataclass(frozen=True, slots=True)
class Error:
    """The input was dropped; ``reason`` is the core's drop reason."""

    reason: str


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
    ) -> None:
        self.device = Device(
            static_private,
            mtu=mtu,
            epoch_offset=epoch_offset,
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
        self._started: float | None = None

    def _results(self, actions: list[Action]) -> TunnResult:
        for action in actions:
            if isinstance(action, SendDatagram):
                self._pending.append(WriteToNetwork(action.data))
            elif isinstance(action, Deliver):
                source = ipaddress.ip_address(
                    action.packet[12:16] if action.packet[0] >> 4 == 4 else action.packet[8:24]
                )
                if isinstance(source, ipaddress.IPv4Address):
                    self._pending.append(WriteToTunnelV4(action.packet, source))
                else:
                    self._pending.append(WriteToTunnelV6(action.packet, source))
        return self._pending.popleft() if self._pending else Done()

    def _dropped_since(self, before: int, actions: list[Action]) -> TunnResult:
        result = self._results(actions)
        if isinstance(result, Done) and self.device.dropped.total() > before:
            reason = next(reversed(self.device.dropped))
            return Error(reason)
        return result

    def write(self, packet: bytes, now: float) -> TunnResult:
        """Encapsulate an IP packet from the host (``encapsulate``)."""
        before = self.device.dropped.total()
        return self._dropped_since(before, self.device.send_packet(packet, now))

    def read(self, datagram: bytes, now: float) -> TunnResult:
        """Decapsulate a datagram from the peer (``decapsulate``); ``b""`` drains the queue."""
        if not datagram:
            return self._pending.popleft() if self._pending else Done()
        before = self.device.dropped.total()
        actions = self.device.receive_datagram(datagram, PEER_ADDRESS, now)
        self.peer.endpoint = PEER_ADDRESS
        return self._dropped_since(before, actions)

    def tick(self, now: float) -> TunnResult:
        """Run due timers (``update_timers``); call about every 100 ms."""
        deadline = self.device.next_timer()
        if deadline is None or deadline > now:
            return self._pending.popleft() if self._pending else Done()
        return self._results(self.device.handle_timer(now))

    def force_handshake(self, now: float) -> TunnResult:
        """Send a handshake initiation now (``format_handshake_initiation(force_resend)``)."""
        return self._results(self.device.initiate_handshake(self.peer, now, force=True))

    def stats(self, now: float) -> TunnelStats:
        peer = self.peer
        since = (
            None
            if peer.last_handshake is None
            else now + self.device.epoch_offset - peer.last_handshake
        )
        keypair = peer.keypairs.current
        loss = 0.0
        if keypair is not None and keypair.receive_top >= 0:
            expected = keypair.receive_top + 1
            loss = max(0.0, 1.0 - keypair.receive_count / expected)
        rtt = None if peer.rtt is None else int(peer.rtt * 1000)
        return TunnelStats(since, peer.tx_bytes, peer.rx_bytes, loss, rtt)
