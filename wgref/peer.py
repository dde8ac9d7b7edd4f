"""A peer's state: keys, endpoint, sessions, staged packets, counters and timer deadlines."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .constants import MAX_STAGED_PACKETS
from .cookie import CookieMaker
from .handshake import Handshake
from .keypair import KeypairSet

Address = tuple[str, int]


@dataclass(slots=True)
class Timers:
    """Deadlines in the device's clock, None when not armed (WP 6; kernel timers.c)."""

    retransmit_handshake: float | None = None
    send_keepalive: float | None = None
    new_handshake: float | None = None
    zero_key_material: float | None = None
    persistent_keepalive: float | None = None

    def earliest(self) -> float | None:
        pending = [
            t
            for t in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if t is not None
        ]
        return min(pending) if pending else None

    def clear(self) -> None:
        self.retransmit_handshake = self.send_keepalive = self.new_handshake = None
        self.zero_key_material = self.persistent_keepalive = None


@dataclass(eq=False)
class Peer:
    """One remote static key and everything the device keeps for it."""

    public_key: bytes
    handshake: Handshake
    cookie: CookieMaker
    endpoint: Address | None = None
    persistent_keepalive: int = 0
    keypairs: KeypairSet = field(default_factory=KeypairSet)
    staged: deque[bytes] = field(default_factory=lambda: deque(maxlen=MAX_STAGED_PACKETS))
    timers: Timers = field(default_factory=Timers)
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float | None = None  # wall-clock seconds (now + epoch offset)
    last_sent_handshake: float | None = None  # initiation or response, device clock
    initiation_sent_at: float | None = None  # for RTT estimates
    handshake_attempts: int = 0
    need_another_keepalive: bool = False
    rtt: float | None = None

    @property
    def preshared_key(self) -> bytes | None:
        psk = self.handshake.preshared_key
        return None if psk == bytes(32) else psk

    def __repr__(self) -> str:
        import base64

        short = base64.b64encode(self.public_key).decode()[:8]
        return f"peer({short}…)"
