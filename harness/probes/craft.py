"""Making and mutating WireGuard messages for the probes (pure: no sockets, no root).

Valid messages come from wgref's core (``wgref.handshake.Handshake`` for the Noise
initiator side, ``wgref.cookie.CookieMaker`` for mac1/mac2, ``wgref.noise.SymmetricState``
for the hand-built low-order initiation). Header fields are changed with scapy's WireGuard
layers (``scapy.contrib.wireguard``) and inner packets are built and parsed with scapy's
IP/UDP/ICMP layers.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from scapy.contrib.wireguard import Wireguard, WireguardTransport
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw

from wgref.constants import (
    INITIATION_SIZE,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    PADDING_MULTIPLE,
    TRANSPORT_HEADER_SIZE,
)
from wgref.cookie import CookieMaker, mac1_key
from wgref.crypto import clamp, dh, mac, public_key
from wgref.errors import ProtocolError
from wgref.handshake import Handshake
from wgref.messages import (
    INITIATION_MAC1_OFFSET,
    CookieReply,
    Initiation,
    Response,
    parse,
    transport_header,
)
from wgref.noise import SymmetricState
from wgref.tai64n import tai64n

SERVER_INNER = "198.19.77.1"
CLIENT_INNER = "198.19.77.2"
ALIEN_INNER = "198.19.77.99"  # inside the tunnel subnet, outside the probe's allowed-ips
LISTEN_PORT = 7001  # the delivery listener on the server's tunnel address
MAC_SIZE = 16

# Curve25519 points of small order: X25519 with any scalar gives all zeros (RFC 7748 s. 6.1).
LOW_ORDER_POINTS: dict[str, bytes] = {
    "zero": bytes(32),
    "order-8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
}

KIND_NAMES = {MESSAGE_INITIATION: "initiation", MESSAGE_RESPONSE: "response",
              MESSAGE_COOKIE_REPLY: "cookie-reply", MESSAGE_TRANSPORT: "transport"}


def kind_name(data: bytes) -> str:
    """A short name for a datagram by its first byte (it need not be valid)."""
    if not data:
        return "empty"
    return KIND_NAMES.get(data[0], f"type-{data[0]}")


def timestamp(offset: float = 0.0) -> bytes:
    """A TAI64N label of now + ``offset`` without whitening, so that two calls a millisecond
    apart are still strictly increasing."""
    return tai64n(time.time() + offset, whiten=False)


def random_index() -> int:
    return int.from_bytes(os.urandom(4), "little")


# ----------------------------------------------------------------------------- sessions


@dataclass(slots=True)
class Session:
    """The initiator's transport keys after a handshake (WP 5.4.5, 5.4.6)."""

    send_key: bytes
    receive_key: bytes
    local_index: int  # ours: the server puts it in the transport messages it sends us
    remote_index: int  # the server's: we put it in ours
    send_counter: int = 0
    _send: ChaCha20Poly1305 = field(init=False, repr=False)
    _receive: ChaCha20Poly1305 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._send = ChaCha20Poly1305(self.send_key)
        self._receive = ChaCha20Poly1305(self.receive_key)

    def seal(self, packet: bytes, counter: int | None = None, *,
             receiver: int | None = None) -> bytes:
        """A transport message carrying ``packet`` (padded to 16 bytes, WP 5.4.6). Without
        ``counter`` the next one is used; an explicit counter leaves the sequence alone."""
        if counter is None:
            counter = self.send_counter
            self.send_counter += 1
        padded = packet + bytes(-len(packet) % PADDING_MULTIPLE)
        nonce = struct.pack("<4xQ", counter)
        header = transport_header(self.remote_index if receiver is None else receiver, counter)
        return header + self._send.encrypt(nonce, padded, None)

    def open(self, data: bytes) -> bytes | None:
        """The padded plaintext of a transport message the server sent us, or None when it
        is not one (wrong type, index or tag)."""
        if len(data) < TRANSPORT_HEADER_SIZE + MAC_SIZE or data[:4] != b"\x04\x00\x00\x00":
            return None
        receiver, counter = struct.unpack_from("<IQ", data, 4)
        if receiver != self.local_index:
            return None
        try:
            return self._receive.decrypt(struct.pack("<4xQ", counter),
                                         data[TRANSPORT_HEADER_SIZE:], None)
        except InvalidTag:
            return None


@dataclass(slots=True)
class PendingInitiation:
    """An initiation we sent, kept to finish the handshake when the response comes."""

    data: bytes
    sender: int
    handshake: Handshake

    @property
    def mac1(self) -> bytes:
        return self.data[INITIATION_MAC1_OFFSET:INITIATION_MAC1_OFFSET + MAC_SIZE]


class Initiator:
    """The probe's static identity towards one server: makes initiations (wgref's core),
    finishes handshakes and keeps the server's cookie (WP 5.4.2-5.4.5, 5.4.7)."""

    def __init__(self, static_private: bytes, server_public: bytes) -> None:
        self.static_private = clamp(static_private)
        self.static_public = public_key(self.static_private)
        self.server_public = server_public
        self.cookie = CookieMaker.for_peer(server_public)

    def initiation(self, *, ts: bytes | None = None, sender: int | None = None,
                   ephemeral_private: bytes | None = None, now: float | None = None
                   ) -> PendingInitiation:
        """A valid initiation with mac1 (and mac2 once a cookie is held)."""
        handshake = Handshake(self.server_public)
        handshake.set_local_static(self.static_private, self.static_public)
        sender = random_index() if sender is None else sender
        message = handshake.create_initiation(
            sender, clamp(ephemeral_private or os.urandom(32)), ts or timestamp())
        data = self.add_macs(message.to_bytes()[:INITIATION_MAC1_OFFSET], now)
        return PendingInitiation(data, sender, handshake)

    def low_order_initiation(self, point: bytes, *, ts: bytes | None = None,
                             sender: int | None = None) -> bytes:
        """An initiation whose ephemeral key is a small-order point, otherwise exactly what
        a responder that skips the all-zero DH check would accept (WP 5.4.2 with
        DH(E_i, S_r) = 0)."""
        state = SymmetricState(self.server_public)
        state.mix_ephemeral(point)
        key = state.mix_key(bytes(32))  # es: all zero for a small-order point
        encrypted_static = state.seal(key, self.static_public)
        key = state.mix_key(dh(self.static_private, self.server_public))  # ss
        encrypted_timestamp = state.seal(key, ts or timestamp())
        message = Initiation(random_index() if sender is None else sender, point,
                             encrypted_static, encrypted_timestamp)
        return self.add_macs(message.to_bytes()[:INITIATION_MAC1_OFFSET])

    def add_macs(self, body: bytes, now: float | None = None) -> bytes:
        return self.cookie.add_macs(body, time.monotonic() if now is None else now)

    def complete(self, pending: PendingInitiation, data: bytes) -> Session:
        """Finish the handshake with the server's response (raises ProtocolError)."""
        message = parse(data)
        if not isinstance(message, Response):
            raise ProtocolError("not-a-response", f"got a {kind_name(data)}")
        if message.receiver != pending.sender:
            raise ProtocolError("unknown-index", "response to another initiation")
        pending.handshake.consume_response(message)
        keys = pending.handshake.derive_keys(is_initiator=True)
        return Session(keys.send_key, keys.receive_key, keys.local_index, keys.remote_index)

    def take_cookie(self, pending: PendingInitiation, data: bytes,
                    now: float | None = None) -> None:
        """Store the cookie of a reply to ``pending`` (raises ProtocolError)."""
        message = parse(data)
        if not isinstance(message, CookieReply):
            raise ProtocolError("not-a-cookie-reply", f"got a {kind_name(data)}")
        self.cookie.last_mac1 = pending.mac1  # the reply is bound to that message's mac1
        self.cookie.consume_reply(message, time.monotonic() if now is None else now)

    @property
    def has_cookie(self) -> bool:
        return self.cookie.cookie is not None


# ----------------------------------------------------------------------------- mutations


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    """``data`` with one bit flipped (a negative offset counts from the end)."""
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def with_reserved(data: bytes, value: int = 1) -> bytes:
    """The message with its three reserved header bytes set to ``value`` (scapy's layer)."""
    packet = Wireguard(data)
    packet.reserved_zero = value
    return bytes(packet)


def resized(data: bytes, size: int) -> bytes:
    """Cut to, or zero-pad up to, ``size`` bytes."""
    return data[:size] + bytes(max(0, size - len(data)))


def remac(data: bytes, server_public: bytes) -> bytes:
    """An initiation whose mac1 is recomputed over its (mutated) first 116 bytes, mac2 zero:
    a mutation then cannot be blamed on a stale mac1."""
    body = data[:INITIATION_MAC1_OFFSET]
    return body + mac(mac1_key(server_public), body) + bytes(MAC_SIZE) + data[INITIATION_SIZE:]


def with_receiver(data: bytes, receiver: int) -> bytes:
    """A transport message with another receiver index (scapy's layer)."""
    packet = Wireguard(data)
    transport = packet[WireguardTransport]
    transport.receiver_index = receiver
    return bytes(packet)


def cookie_reply(receiver: int) -> bytes:
    """A well-formed cookie reply that cannot authenticate (random nonce and cookie)."""
    return CookieReply(receiver, os.urandom(24), os.urandom(32)).to_bytes()


# ----------------------------------------------------------------------------- inner packets


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(IP(src=src, dst=dst, ttl=64) / UDP(sport=sport, dport=dport) / payload)


def icmp_echo_reply(src: str, dst: str) -> bytes:
    """An inner packet nothing answers (an unsolicited ICMP echo reply)."""
    return bytes(IP(src=src, dst=dst, ttl=64) / ICMP(type=0, id=0x7777, seq=1) / b"probe")


@dataclass(frozen=True, slots=True)
class InnerUdp:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def parse_inner_udp(packet: bytes) -> InnerUdp | None:
    """The IPv4/UDP fields of a decrypted inner packet (padding ignored), else None."""
    if not packet or packet[0] >> 4 != 4:
        return None
    ip = IP(packet)
    if UDP not in ip:
        return None
    udp = ip[UDP]
    payload = bytes(ip[Raw].load) if Raw in ip else b""  # without the padding
    return InnerUdp(ip.src, ip.dst, int(udp.sport), int(udp.dport), payload)
