"""Which of the protocol's defences a :class:`~wgref.device.Device` applies.

Every check is on by default and a real interface never turns one off. The switch exists for
negative controls: the deliberately sloppy probe server (``harness/probes/sloppy.py``) and the
harness's named broken-peer faults run a Device with chosen checks off, to show that a probe or
a scenario step fails against a peer that lacks the defence it is meant to catch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Checks:
    """One flag per defence (True: applied, as the kernel does)."""

    #: Transport counters through the sliding replay window (receive.c counter_validate).
    replay: bool = True
    #: Initiation TAI64N strictly newer, and at most 50 initiations a second per peer
    #: (noise.c wg_noise_handshake_consume_initiation).
    timestamp: bool = True
    #: mac1 of handshake messages (cookie.c wg_cookie_validate_packet).
    mac1: bool = True
    #: All-zero DH results refused (noise.c: curve25519 returning false).
    low_order: bool = True
    #: The three reserved header bytes must be zero (messages.h struct message_header).
    reserved: bool = True
    #: The inner source address must be one of the peer's allowed IPs (receive.c
    #: wg_packet_consume_data_done: the cryptokey-routing check).
    crypto_routing: bool = True
    #: Follow the source of authenticated datagrams (WP 6.5; socket.c wg_socket_set_peer_endpoint).
    roaming: bool = True
    #: Under load, answer handshake messages without a valid mac2 with a cookie reply and rate
    #: limit by source (receive.c wg_receive_handshake_packet). Off: never under load.
    cookie_replies: bool = True
    #: Send persistent keepalives (timers.c wg_timers_any_authenticated_packet_traversal).
    persistent_keepalive: bool = True

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The flags, as ``harness`` fault names spell them (``low_order`` -> ``low-order``)."""
        return tuple(f.name.replace("_", "-") for f in fields(cls))

    @classmethod
    def without(cls, *names: str) -> Checks:
        """All checks except ``names`` (``Checks.names()`` spelling); raises ValueError for an
        unknown name."""
        known = set(cls.names())
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"unknown checks {unknown} (known: {', '.join(cls.names())})")
        return cls(**{name.replace("-", "_"): False for name in names})

    @property
    def all_on(self) -> bool:
        return self == ALL_CHECKS


ALL_CHECKS = Checks()

__all__ = ["ALL_CHECKS", "Checks"]
