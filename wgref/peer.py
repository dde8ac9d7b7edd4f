"""A peer's state: keys, endpoint, sessions, staged packets, counters and timer deadlines
(the timers and the rules that arm them live in timers.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .constants import MAX_STAGED_PACKETS
from .cookie import CookieMaker
from .handshake import Handshake
from .keypair import KeypairSet
from .results import Endpoint
from .timers import Timers

# A (host, port) pair as the socket module takes it; the core itself keeps Endpoints.
Address = tuple[str, int]


@dataclass(eq=False)
class Peer:
    """One remote static key and everything the device keeps for it."""

    public_key: bytes
    handshake: Handshake
    cookie: CookieMaker
    endpoint: Endpoint | None = None
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
    sent_lastminute_handshake: bool = False  # receive.c keep_key_fresh, once per session
    rtt: float | None = None

    @property
    def preshared_key(self) -> bytes | None:
        psk = self.handshake.preshared_key
        return None if psk == bytes(32) else psk

    def __repr__(self) -> str:
        import base64

        short = base64.b64encode(self.public_key).decode()[:8]
        return f"peer({short}…)"
