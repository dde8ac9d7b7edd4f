"""The boundary between the sans-I/O core and its I/O shells: endpoints, drop reasons, events
and the output batch.

Every entry point of :class:`~wgref.device.Device` appends what it wants done to a
:class:`Batch` supplied by the caller:

* ``Device.send_packets(packets, now, out)`` — IP packets read from the tunnel;
* ``Device.receive_datagrams(datagrams, sources, now, out)`` — UDP payloads and the
  :class:`Endpoint` each came from (``sources[i]`` belongs to ``datagrams[i]``);
* ``Device.handle_timers(now, out)`` — whenever ``Device.next_timer()`` is due.

The single-item calls (``send_packet``, ``receive_datagram``) are batches of one. Nothing but
the documented results leaves these calls: bad input becomes a :class:`Dropped` event and a
count in ``Device.dropped``; it never raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .peer import Peer


class Endpoint(NamedTuple):
    """A peer's UDP address, and the local address and interface that a datagram from it
    arrived on (kernel socket.c: ``struct endpoint`` keeps ``src4``/``src6`` and
    ``src_if4``, and replies leave from that address until a send fails with it).

    ``local`` is ``""`` and ``ifindex`` 0 when routing should choose the source (an endpoint
    set by configuration, or one whose remembered source stopped working). ``host`` is the
    textual address without brackets or scope; ``port`` the UDP port.
    """

    host: str
    port: int
    local: str = ""
    ifindex: int = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as the socket module takes a destination."""
        return (self.host, self.port)

    def without_source(self) -> Endpoint:
        """The same peer address with the remembered local source forgotten
        (kernel socket.c wg_socket_clear_peer_endpoint_src)."""
        return Endpoint(self.host, self.port)


class DropReason(enum.StrEnum):
    """Why a datagram or packet was dropped. The values are the counters' names (``wg``-style
    lower-case tags) and stay stable: reports and tests key on them."""

    # Wire format (messages.py; kernel receive.c prepare_skb_header).
    TOO_SHORT = "too-short"
    BAD_TYPE = "bad-type"
    BAD_SIZE = "bad-size"
    BAD_RESERVED = "bad-reserved"
    # Handshake (cookie.c, noise.c, ratelimiter.c).
    NO_PRIVATE_KEY = "no-private-key"
    BAD_MAC1 = "bad-mac1"
    COOKIE_SENT = "cookie-sent"
    RATELIMITED = "ratelimited"
    UNKNOWN_PEER = "unknown-peer"
    LOW_ORDER_KEY = "low-order-key"
    DECRYPT_FAILED = "decrypt-failed"
    REPLAYED_INITIATION = "replayed-initiation"
    INITIATION_FLOOD = "initiation-flood"
    NO_HANDSHAKE = "no-handshake"
    UNEXPECTED_COOKIE = "unexpected-cookie"
    UNKNOWN_INDEX = "unknown-index"
    # Transport data (receive.c wg_packet_rx_poll / wg_packet_consume_data_done).
    EXPIRED_KEYPAIR = "expired-keypair"
    REPLAY = "replay"
    BAD_INNER_PACKET = "bad-inner-packet"
    CRYPTO_RP = "crypto-rp"
    # Outbound (device.c wg_xmit).
    BAD_OUTBOUND_PACKET = "bad-outbound-packet"
    NO_ROUTE = "no-route"
    NO_ENDPOINT = "no-endpoint"


@dataclass(frozen=True, slots=True)
class HandshakeSecrets:
    """The secrets of one handshake message we made, for a Wireshark key log."""

    local_static_private: bytes
    remote_static_public: bytes
    local_ephemeral_private: bytes
    preshared_key: bytes | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram (``source`` set) or a tunnel packet (``source`` None) was dropped."""

    reason: DropReason
    source: Endpoint | None = None
    peer: Peer | None = None


@dataclass(frozen=True, slots=True)
class HandshakeInitiated:
    """We sent a handshake initiation to ``peer`` (kernel timers.c handshake_initiated)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class HandshakeResponded:
    """We answered ``peer``'s initiation (the responder's half of a handshake)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A session with ``peer`` is confirmed (kernel timers.c handshake_complete)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class CookieReplySent:
    """Under load, an initiation or response without a valid mac2 got a cookie reply."""

    destination: Endpoint


@dataclass(frozen=True, slots=True)
class CookieReplyReceived:
    """A cookie reply for ``peer`` was accepted (kernel cookie.c consume_reply)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class KeysZeroed:
    """Every key of ``peer`` was erased (kernel timers.c zero_key_material)."""

    peer: Peer


Event = (
    Dropped
    | HandshakeInitiated
    | HandshakeResponded
    | HandshakeCompleted
    | CookieReplySent
    | CookieReplyReceived
    | KeysZeroed
)


@dataclass(slots=True)
class Batch:
    """What one or more calls into the core ask the shell to do, in order.

    ``packets``: IP packets for the tunnel. ``sends``: runs of datagrams per endpoint (a run
    can go out as one UDP_SEGMENT send). ``secrets``: key-log material (only when the
    device's ``keylog`` is on). ``events``: what happened, for logs, probes and reports.
    """

    packets: list[bytes] = field(default_factory=list)
    sends: list[tuple[Endpoint, list[bytes]]] = field(default_factory=list)
    secrets: list[HandshakeSecrets] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def send(self, destination: Endpoint, datagrams: list[bytes]) -> None:
        sends = self.sends
        if sends and sends[-1][0] == destination:
            sends[-1][1].extend(datagrams)
        else:
            sends.append((destination, datagrams))

    def datagrams(self) -> list[tuple[Endpoint, bytes]]:
        """Every datagram to send, flattened in order."""
        return [(dest, data) for dest, run in self.sends for data in run]

    def clear(self) -> None:
        self.packets.clear()
        self.sends.clear()
        self.secrets.clear()
        self.events.clear()

    def __bool__(self) -> bool:
        return bool(self.packets or self.sends or self.secrets or self.events)


__all__ = [
    "Batch",
    "CookieReplyReceived",
    "CookieReplySent",
    "DropReason",
    "Dropped",
    "Endpoint",
    "Event",
    "HandshakeCompleted",
    "HandshakeInitiated",
    "HandshakeResponded",
    "HandshakeSecrets",
    "KeysZeroed",
]
