"""Transport keypairs and the previous/current/next rotation (WP 5.4.5, 5.4.6, 6.1).

A keypair is what a completed handshake leaves behind: a send key with its counter and a
receive key with its replay window. Each peer holds up to three: ``next`` (a responder's new
keypair, not used to send until the initiator has used it), ``current`` and ``previous`` (kept
so packets in flight on the old session still decrypt after a rekey).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
)
from .replay import ReplayWindow


@dataclass(slots=True, eq=False)
class Keypair:
    send_key: bytes
    receive_key: bytes
    created: float
    is_initiator: bool
    local_index: int
    remote_index: int
    send_counter: int = 0
    receive_count: int = 0  # packets accepted, for loss estimates
    receive_top: int = -1  # highest counter accepted
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    sender: ChaCha20Poly1305 = field(init=False)
    receiver: ChaCha20Poly1305 = field(init=False)

    def __post_init__(self) -> None:
        self.sender = ChaCha20Poly1305(self.send_key)
        self.receiver = ChaCha20Poly1305(self.receive_key)

    def can_send(self, now: float) -> bool:
        # WP 6.1: never send after REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.
        return (
            now - self.created < REJECT_AFTER_TIME
            and self.send_counter < REJECT_AFTER_MESSAGES
        )

    def can_receive(self, now: float) -> bool:
        return now - self.created < REJECT_AFTER_TIME

    def next_counter(self) -> int:
        counter = self.send_counter
        self.send_counter = counter + 1
        return counter


@dataclass(slots=True)
class KeypairSet:
    previous: Keypair | None = None
    current: Keypair | None = None
    next: Keypair | None = None

    def install(self, keypair: Keypair) -> list[Keypair]:
        """Add a freshly derived keypair; returns the keypairs that are dropped.

        The initiator uses its keypair at once (WP 5.4.5), so it becomes current. The
        responder must wait for the initiator's first transport message, so it becomes
        next; if a next was already waiting, it is dropped unused.
        """
        dropped: list[Keypair] = []
        if keypair.is_initiator:
            if self.next is not None:
                # A waiting next keypair may already be in use by the other side: it is
                # kept as previous and the current one is dropped (kernel noise.c comment
                # on add_new_keypair makes the same choice).
                dropped += [k for k in (self.previous, self.current) if k is not None]
                self.previous, self.next = self.next, None
            else:
                if self.previous is not None:
                    dropped.append(self.previous)
                self.previous = self.current
            self.current = keypair
        else:
            if self.next is not None:
                dropped.append(self.next)
            self.next = keypair
            if self.previous is not None:
                dropped.append(self.previous)
            self.previous = None
        return dropped

    def confirm_next(self, keypair: Keypair) -> list[Keypair]:
        """The responder received data on ``next``: it becomes current (WP 5.4.5)."""
        dropped: list[Keypair] = []
        if self.next is not keypair:
            return dropped
        if self.previous is not None:
            dropped.append(self.previous)
        self.previous, self.current, self.next = self.current, keypair, None
        return dropped

    def clear(self) -> list[Keypair]:
        dropped = [k for k in (self.previous, self.current, self.next) if k is not None]
        self.previous = self.current = self.next = None
        return dropped

    def all(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.next) if k is not None]
