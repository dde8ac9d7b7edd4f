"""Capture replay: decode and decrypt the WireGuard frames of a pcap/pcapng file.

Given the key log of one side (or both, or just a responder's static private key), this
re-runs each handshake it sees with the same functions a live peer uses (wgref.noise), then
decrypts the transport frames of every session it completed. Output objects use the field
names of the project's reference decodes (tests/data/captures/*.expected.json); :func:`named`
gives the same object with names instead of numbers (message type, IP protocol, TCP flags).

A datagram holding several messages (a UDP GSO/GRO super-frame, see :mod:`wgref.gso`) gives
one frame object per message, with ``segment``/``segments``/``segment_size``; the segment size
is confirmed by authenticating the first transport message when its session is known.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .capture import Capture, UdpDatagram
from .constants import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
)
from .cookie import mac1_key, mac1_valid
from .crypto import clamp, dh, public_key
from .errors import ProtocolError
from .gso import segment_sizes, split
from .keylog import EphemeralSecret, KeyLog
from .messages import CookieReply, Initiation, Response, Transport, parse
from .noise import ZERO_PSK, SymmetricState, open_initiation, open_response
from .tai64n import decode_tai64n

Frame = dict[str, Any]


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


@dataclass
class _HalfHandshake:
    """An initiation we could open, waiting for its response."""

    state: SymmetricState
    initiator_static: bytes
    initiator_ephemeral: bytes
    responder_static: bytes
    initiator_static_private: bytes | None  # known when we hold the initiator's keys
    initiator_ephemeral_secret: EphemeralSecret | None
    timestamp: bytes


@dataclass
class _Session:
    cipher: ChaCha20Poly1305
    direction: str


@dataclass
class Keys:
    """The secrets a decode can use, indexed the way the decoder looks them up."""

    static_private: dict[bytes, bytes] = field(default_factory=dict)  # public -> private
    static_public: set[bytes] = field(default_factory=set)
    ephemeral: dict[bytes, EphemeralSecret] = field(default_factory=dict)  # public -> secret

    @classmethod
    def from_keylog(cls, keylog: KeyLog) -> Keys:
        keys = cls()
        for private in keylog.static_private_keys:
            private = clamp(private)
            keys.static_private[public_key(private)] = private
        keys.static_public = set(keylog.remote_static_public_keys) | set(keys.static_private)
        for secret in keylog.ephemerals:
            clamped = EphemeralSecret(clamp(secret.private_key), secret.preshared_key)
            keys.ephemeral.setdefault(public_key(clamped.private_key), clamped)
        return keys

    @property
    def empty(self) -> bool:
        return not (self.static_private or self.static_public or self.ephemeral)


@dataclass
class DecodedMessage:
    """One WireGuard message of a capture: the datagram it came in, its bytes, its decode."""

    datagram: UdpDatagram
    data: bytes
    frame: Frame
    plaintext: bytes | None = None  # a transport message's decrypted, padded packet

    @property
    def segments(self) -> int:
        return int(self.frame.get("segments", 1))


@dataclass
class DecodeResult:
    messages: list[DecodedMessage]
    failed_handshakes: list[int]  # frame numbers of responses that did not authenticate
    undecrypted: list[int]  # frames of transport messages we could not decrypt (per message)
    splits: dict[int, list[bytes]] = field(default_factory=dict)  # frame -> its GSO segments

    @property
    def frames(self) -> list[Frame]:
        return [m.frame for m in self.messages]


class Decoder:
    """Stateful decoder: feed datagrams in capture order."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._initiations: dict[int, _HalfHandshake] = {}
        self._sessions: dict[int, _Session] = {}
        self._indices: set[int] = set()
        self._flows: set[frozenset[tuple[str, int]]] = set()
        self.failed_handshakes: list[int] = []
        self.undecrypted: list[int] = []
        self.splits: dict[int, list[bytes]] = {}

    def decode(self, datagram: UdpDatagram) -> list[DecodedMessage]:
        """The messages of a datagram (several for a GSO super-frame); [] if not WireGuard."""
        pieces = self._segments(datagram.payload)
        out = []
        for index, piece in enumerate(pieces, 1):
            decoded = self._decode_message(datagram, piece)
            if decoded is None:
                continue
            if len(pieces) > 1:
                decoded.frame.update(
                    segment=index, segments=len(pieces), segment_size=len(pieces[0])
                )
            out.append(decoded)
        if len(pieces) > 1 and out:
            self.splits[datagram.frame] = pieces
        return out

    def _segments(self, payload: bytes) -> list[bytes]:
        sizes = segment_sizes(payload)
        if not sizes:
            return [payload]
        session = None
        if payload[0] == MESSAGE_TRANSPORT:
            session = self._sessions.get(struct.unpack_from("<I", payload, 4)[0])
        if session is None:
            return split(payload, sizes[0])
        for size in [*sizes, len(payload)]:
            if _open(session, payload[:size]) is not None:
                return split(payload, size)
        return split(payload, sizes[0])  # no size authenticates: wrong keys, still framed

    def _decode_message(self, datagram: UdpDatagram, data: bytes) -> DecodedMessage | None:
        try:
            message = parse(data)
        except ProtocolError:
            return None
        flow = frozenset((datagram.src, datagram.dst))
        if isinstance(message, Transport):
            if message.receiver not in self._indices and flow not in self._flows:
                return None  # heuristic: transport only on flows/indices seen in a handshake
        else:
            self._flows.add(flow)
        frame: Frame = {
            "frame": datagram.frame,
            "time": datagram.time,
            "outer": f"{_endpoint(datagram.src)} -> {_endpoint(datagram.dst)}",
            "type": data[0],
            "udp_payload_len": len(data),
        }
        decoded = DecodedMessage(datagram, data, frame)
        if isinstance(message, Initiation):
            self._initiation(message, data, frame)
        elif isinstance(message, Response):
            self._response(message, data, frame)
        elif isinstance(message, CookieReply):
            frame["receiver_index"] = f"{message.receiver:08x}"
            frame["nonce"] = message.nonce.hex()
        else:
            decoded.plaintext = self._transport(message, frame)
        return decoded

    # --------------------------------------------------------------- handshakes

    def _initiation(self, message: Initiation, raw: bytes, frame: Frame) -> None:
        self._indices.add(message.sender)
        frame["sender_index"] = f"{message.sender:08x}"
        frame["mac2_all_zero"] = message.mac2 == bytes(16)
        frame["ephemeral_pub"] = b64(message.ephemeral)
        responder = self._mac1_owner(raw)
        frame["mac1_valid_for_responder_static_pub"] = b64(responder) if responder else None
        if responder is None:
            return
        half = self._open_initiation(message, responder)
        if half is None:
            return
        frame["initiator_static_pub"] = b64(half.initiator_static)
        seconds, nanoseconds = decode_tai64n(half.timestamp)
        frame["tai64n_hex"] = half.timestamp.hex()
        frame["tai64n_seconds_minus_2_62"] = seconds
        frame["tai64n_nanoseconds"] = nanoseconds
        self._initiations[message.sender] = half

    def _mac1_owner(self, raw: bytes) -> bytes | None:
        for static in sorted(self.keys.static_public):
            if mac1_valid(raw, mac1_key(static)):
                return static
        return None

    def _open_initiation(self, message: Initiation, responder: bytes) -> _HalfHandshake | None:
        """Open with the responder's static key, or else with the initiator's ephemeral and
        static keys (WP 5.4.2 run from either end)."""
        responder_private = self.keys.static_private.get(responder)
        attempts: list[tuple[bytes, Any, bytes | None, EphemeralSecret | None]] = []
        if responder_private is not None:
            es = dh(responder_private, message.ephemeral)
            attempts.append((es, lambda s: dh(responder_private, s), None, None))
        secret = self.keys.ephemeral.get(message.ephemeral)
        if secret is not None:
            es = dh(secret.private_key, responder)
            for static_private in self.keys.static_private.values():
                ss = dh(static_private, responder)
                attempts.append((es, lambda _s, ss=ss: ss, static_private, secret))
        for es, ss_of, initiator_private, eph in attempts:
            try:
                opened = open_initiation(message, responder, es, ss_of)
            except ProtocolError:
                continue
            if initiator_private is not None and public_key(initiator_private) != (
                opened.initiator_static
            ):
                continue
            return _HalfHandshake(
                opened.state,
                opened.initiator_static,
                opened.initiator_ephemeral,
                responder,
                initiator_private
                or self.keys.static_private.get(opened.initiator_static),
                eph,
                opened.timestamp,
            )
        return None

    def _response(self, message: Response, raw: bytes, frame: Frame) -> None:
        self._indices.add(message.sender)
        frame["sender_index"] = f"{message.sender:08x}"
        frame["receiver_index"] = f"{message.receiver:08x}"
        frame["mac2_all_zero"] = message.mac2 == bytes(16)
        frame["ephemeral_pub"] = b64(message.ephemeral)
        half = self._initiations.pop(message.receiver, None)
        if half is None:
            owner = self._mac1_owner(raw)
            if owner is not None:
                frame["mac1_valid_for_initiator_static_pub"] = b64(owner)
            return
        frame["mac1_valid_for_initiator_static_pub"] = mac1_valid(
            raw, mac1_key(half.initiator_static)
        )
        attempts: list[tuple[bytes, bytes, bytes]] = []
        responder_secret = self.keys.ephemeral.get(message.ephemeral)
        if responder_secret is not None:
            attempts.append(
                (
                    dh(responder_secret.private_key, half.initiator_ephemeral),
                    dh(responder_secret.private_key, half.initiator_static),
                    responder_secret.preshared_key or ZERO_PSK,
                )
            )
        if half.initiator_ephemeral_secret is not None and half.initiator_static_private:
            eph = half.initiator_ephemeral_secret
            attempts.append(
                (
                    dh(eph.private_key, message.ephemeral),
                    dh(half.initiator_static_private, message.ephemeral),
                    eph.preshared_key or ZERO_PSK,
                )
            )
        if not attempts:
            return  # no keys for this handshake: nothing to say about it
        for ee, se, psk in attempts:
            try:
                state = open_response(message, half.state, ee, se, psk)
            except ProtocolError:
                continue
            initiator_send, responder_send = state.split()
            self._sessions[message.sender] = _Session(
                ChaCha20Poly1305(initiator_send), "initiator->responder"
            )
            self._sessions[message.receiver] = _Session(
                ChaCha20Poly1305(responder_send), "responder->initiator"
            )
            frame["preshared_key"] = b64(psk)
            frame["handshake_ok"] = True
            return
        frame["handshake_ok"] = False
        self.failed_handshakes.append(frame["frame"])

    # --------------------------------------------------------------- transport

    def _transport(self, message: Transport, frame: Frame) -> bytes | None:
        frame["receiver_index"] = f"{message.receiver:08x}"
        frame["counter"] = message.counter
        session = self._sessions.get(message.receiver)
        if session is None:
            if not self.keys.empty:
                self.undecrypted.append(frame["frame"])
            return None
        frame["direction_within_session"] = session.direction
        plaintext = _open(session, message.to_bytes())
        if plaintext is None:
            frame["decrypt_ok"] = False
            self.undecrypted.append(frame["frame"])
            return None
        frame["inner"] = summarize_inner(plaintext)
        return plaintext


def _open(session: _Session, data: bytes) -> bytes | None:
    """The plaintext of a transport message (WP 5.4.6), or None if it does not authenticate."""
    counter = struct.unpack_from("<Q", data, 8)[0]
    try:
        return session.cipher.decrypt(struct.pack("<4xQ", counter), data[16:], None)
    except InvalidTag:
        return None


def summarize_inner(plaintext: bytes) -> dict[str, Any]:
    """Describe a decrypted (padded) transport plaintext."""
    inner: dict[str, Any] = {
        "plaintext_len_padded": len(plaintext),
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
    }
    if not plaintext:
        inner["kind"] = "keepalive"
        return inner
    version = plaintext[0] >> 4
    if version == 4 and len(plaintext) >= 20:
        header_len = (plaintext[0] & 0x0F) * 4
        total = struct.unpack_from(">H", plaintext, 2)[0]
        proto = plaintext[9]
        inner.update(
            kind="ipv4",
            ip_total_len=total,
            src=str(ipaddress.IPv4Address(plaintext[12:16])),
            dst=str(ipaddress.IPv4Address(plaintext[16:20])),
            ip_proto=proto,
        )
        payload_at = header_len
    elif version == 6 and len(plaintext) >= 40:
        total = 40 + struct.unpack_from(">H", plaintext, 4)[0]
        proto = plaintext[6]
        inner.update(
            kind="ipv6",
            ip_total_len=total,
            src=str(ipaddress.IPv6Address(plaintext[8:24])),
            dst=str(ipaddress.IPv6Address(plaintext[24:40])),
            ip_proto=proto,
        )
        payload_at = 40
    else:
        inner["kind"] = "unknown"
        return inner
    padding = plaintext[total:]
    inner["padding_bytes"] = len(padding)
    inner["padding_all_zero"] = not any(padding)
    transport = plaintext[payload_at:total]
    if proto in (1, 58) and len(transport) >= 2:  # ICMP, ICMPv6
        inner["icmp_type"], inner["icmp_code"] = transport[0], transport[1]
    elif proto in (6, 17) and len(transport) >= 4:  # TCP, UDP
        inner["sport"], inner["dport"] = struct.unpack_from(">HH", transport)
        if proto == 6 and len(transport) >= 20:
            data_offset = (transport[12] >> 4) * 4
            inner["tcp_flags"] = transport[13] | ((transport[12] & 1) << 8)
            inner["tcp_payload_len"] = len(transport) - data_offset
    return inner


def _endpoint(address: tuple[str, int]) -> str:
    host = address[0]
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def decode_capture(capture: Capture, keylog: KeyLog) -> DecodeResult:
    """Decode every WireGuard frame of ``capture`` with the keys of ``keylog``."""
    decoder = Decoder(Keys.from_keylog(keylog))
    messages = [m for d in capture.datagrams for m in decoder.decode(d)]
    return DecodeResult(messages, decoder.failed_handshakes, decoder.undecrypted, decoder.splits)


TYPE_NAMES = {
    MESSAGE_INITIATION: "initiation",
    MESSAGE_RESPONSE: "response",
    MESSAGE_COOKIE_REPLY: "cookie-reply",
    MESSAGE_TRANSPORT: "transport",
}
IP_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmpv6", 132: "sctp"}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "AE")  # bit 0 first


def named(frame: Frame) -> Frame:
    """The frame with names where the decode has numbers: ``"type": "transport"``, the inner
    ``"ip_proto": "tcp"`` (the number where there is no name) and TCP flags as a list."""
    out = dict(frame)
    out["type"] = TYPE_NAMES.get(frame["type"], frame["type"])
    inner = frame.get("inner")
    if inner is not None:
        inner = out["inner"] = dict(inner)
        if "ip_proto" in inner:
            inner["ip_proto"] = IP_PROTOCOL_NAMES.get(inner["ip_proto"], inner["ip_proto"])
        if "tcp_flags" in inner:
            flags = inner["tcp_flags"]
            inner["tcp_flags"] = [n for bit, n in enumerate(TCP_FLAG_NAMES) if flags >> bit & 1]
    return out


__all__ = [
    "IP_PROTOCOL_NAMES",
    "TYPE_NAMES",
    "DecodeResult",
    "DecodedMessage",
    "Decoder",
    "Keys",
    "decode_capture",
    "named",
    "summarize_inner",
]
