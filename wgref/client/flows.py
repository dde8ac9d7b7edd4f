"""The per-flow decisions and the NAT mappings of tunnelled flows, with idle timeouts.

A flow is keyed by its outbound 5-tuple ``(proto, src, sport, dst, dport)`` as the host sent
it (for ICMP echo the identifier is the requester's "port"). A tunnelled flow also has a
reverse key ``(proto, dst, dport, tunnel address, nat port)``: how its replies arrive from the
tunnel. The nat port is the original port unless another flow already holds that reverse key
(two hosts behind a forwarding client using the same source port, say).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .packet import ICMP, ICMPV6, TCP, Translation

TUNNEL = "tunnel"
BYPASS = "bypass"

TIMEOUTS = {TCP: 7440.0, ICMP: 30.0, ICMPV6: 30.0}  # anything else (UDP): UDP_TIMEOUT
UDP_TIMEOUT = 180.0
CLOSING_TIMEOUT = 60.0  # a TCP flow after FIN or RST
BYPASS_TIMEOUT = 120.0  # bypass flows live in conntrack; this only covers queued stragglers
MAX_FLOWS = 65536

Key = tuple[int, bytes, int, bytes, int]


@dataclass(slots=True, eq=False)
class Flow:
    proto: int
    version: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    decision: str
    reason: str
    nat_src: bytes = b""
    nat_sport: int = 0
    nat_dst: bytes = b""  # a redirected DNS query: the tunnel's DNS server
    last_seen: float = 0.0
    closing: bool = False
    packets: int = 0
    forwarded: bool = False
    peer_mss: int = 0  # TCP: the MSS the far end announced in its SYN (after the clamp)
    answered: bool = False  # an answer went in through the raw socket (run.py)
    # the NAT of its packets to the tunnel and of those from it, once worked out (run.py)
    outbound_nat: Translation | None = None
    inbound_nat: Translation | None = None

    @property
    def key(self) -> Key:
        return (self.proto, self.src, self.sport, self.dst, self.dport)

    @property
    def reverse_key(self) -> Key:
        return (self.proto, self.nat_dst or self.dst, self.dport, self.nat_src, self.nat_sport)

    def outbound_translation(self) -> Translation:
        """From how the host sent it to how it goes into the tunnel."""
        if self.outbound_nat is None:
            self.outbound_nat = Translation.between(
                self.version, self.proto, (self.src, self.sport, self.dst, self.dport),
                (self.nat_src, self.nat_sport, self.nat_dst or self.dst, self.dport))
        return self.outbound_nat

    def inbound_translation(self) -> Translation:
        """From how a reply comes out of the tunnel to how the host expects it."""
        if self.inbound_nat is None:
            self.inbound_nat = Translation.between(
                self.version, self.proto,
                (self.nat_dst or self.dst, self.dport, self.nat_src, self.nat_sport),
                (self.dst, self.dport, self.src, self.sport))
        return self.inbound_nat

    def timeout(self) -> float:
        if self.decision == BYPASS:
            return BYPASS_TIMEOUT
        if self.closing:
            return CLOSING_TIMEOUT
        return TIMEOUTS.get(self.proto, UDP_TIMEOUT)


class FlowTable:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.outbound: dict[Key, Flow] = {}
        self.inbound: dict[Key, Flow] = {}
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self.outbound)

    def count(self, decision: str) -> int:
        return sum(1 for f in self.outbound.values() if f.decision == decision)

    def add(self, flow: Flow, now: float) -> Flow:
        flow.last_seen = now
        if len(self.outbound) >= MAX_FLOWS:
            self.expire(now)
            if len(self.outbound) >= MAX_FLOWS:  # still full: forget the stalest
                oldest = min(self.outbound.values(), key=lambda f: f.last_seen)
                self.remove(oldest)
        if flow.decision == TUNNEL:
            flow.nat_sport = self._free_port(flow)
            self.inbound[flow.reverse_key] = flow
        self.outbound[flow.key] = flow
        return flow

    def _free_port(self, flow: Flow) -> int:
        wanted = flow.sport
        for attempt in range(64):
            key = (flow.proto, flow.nat_dst or flow.dst, flow.dport, flow.nat_src, wanted)
            holder = self.inbound.get(key)
            if holder is None or holder is flow:
                return wanted
            wanted = self._rng.randrange(49152, 65536) if attempt < 63 else wanted
        return wanted

    def remove(self, flow: Flow) -> None:
        self.outbound.pop(flow.key, None)
        if self.inbound.get(flow.reverse_key) is flow:
            del self.inbound[flow.reverse_key]

    def expire(self, now: float) -> int:
        stale = [f for f in self.outbound.values() if now - f.last_seen > f.timeout()]
        for flow in stale:
            self.remove(flow)
        return len(stale)
