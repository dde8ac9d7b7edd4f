"""The four WireGuard messages: exact layouts, building and strict parsing (WP 5.4.2-5.4.7).

All integers are little-endian. The first four bytes are the type and three reserved zero bytes;
the kernel compares them as one LE32, so a non-zero reserved byte makes a message invalid
(kernel receive.c ``validate_header_len``, messages.h ``struct message_header``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RESPONSE_SIZE,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
)
from .errors import ProtocolError

# Offsets of mac1 and mac2 (WP 5.4.4: mac1 covers everything before it, mac2 likewise).
INITIATION_MAC1_OFFSET = 116
RESPONSE_MAC1_OFFSET = 60

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")
_TRANSPORT_HEADER = struct.Struct("<I I Q")
_HEADER = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Initiation:
    """Handshake initiation, 148 bytes (WP 5.4.2)."""

    sender: int
    ephemeral: bytes  # unencrypted ephemeral public key, 32
    encrypted_static: bytes  # AEAD(static public), 32 + 16
    encrypted_timestamp: bytes  # AEAD(TAI64N), 12 + 16
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def to_bytes(self) -> bytes:
        return _INITIATION.pack(
            MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )


@dataclass(frozen=True, slots=True)
class Response:
    """Handshake response, 92 bytes (WP 5.4.3)."""

    sender: int
    receiver: int
    ephemeral: bytes  # 32
    encrypted_nothing: bytes  # AEAD(empty), 16
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def to_bytes(self) -> bytes:
        return _RESPONSE.pack(
            MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Cookie reply, 64 bytes (WP 5.4.7)."""

    receiver: int
    nonce: bytes  # 24
    encrypted_cookie: bytes  # XAEAD(cookie), 16 + 16

    def to_bytes(self) -> bytes:
        return _COOKIE_REPLY.pack(
            MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie
        )


@dataclass(frozen=True, slots=True)
class Transport:
    """Transport data, 16-byte header + encrypted padded packet (WP 5.4.6)."""

    receiver: int
    counter: int
    encrypted: bytes  # padded plaintext + 16-byte tag

    def to_bytes(self) -> bytes:
        return transport_header(self.receiver, self.counter) + self.encrypted


Message = Initiation | Response | CookieReply | Transport

_SIZES = {
    MESSAGE_INITIATION: INITIATION_SIZE,
    MESSAGE_RESPONSE: RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}


def message_type(data: bytes) -> int:
    """Validate the header and size of a datagram and return its message type.

    Raises :class:`ProtocolError` for a short datagram, an unknown type, a non-zero reserved
    byte, or a size that is not exactly 148/92/64 (or at least 32 for transport).
    """
    if len(data) < 4:
        raise ProtocolError("too-short", f"{len(data)} bytes")
    header: int = _HEADER.unpack_from(data)[0]
    if header == MESSAGE_TRANSPORT:
        if len(data) < TRANSPORT_MIN_SIZE:
            raise ProtocolError("bad-size", f"transport of {len(data)} bytes (minimum 32)")
        return MESSAGE_TRANSPORT
    size = _SIZES.get(header)
    if size is None:
        if header & 0xFF in (1, 2, 3, 4):
            raise ProtocolError("bad-reserved", f"reserved bytes {data[1:4].hex()} not zero")
        raise ProtocolError("bad-type", f"unknown message type {header & 0xFF}")
    if len(data) != size:
        raise ProtocolError("bad-size", f"type {header} must be {size} bytes, got {len(data)}")
    return header


def parse(data: bytes) -> Message:
    """Parse a datagram into one of the four messages (see :func:`message_type` for errors)."""
    kind = message_type(data)
    if kind == MESSAGE_INITIATION:
        _, sender, eph, static, ts, mac1, mac2 = _INITIATION.unpack(data)
        return Initiation(sender, eph, static, ts, mac1, mac2)
    if kind == MESSAGE_RESPONSE:
        _, sender, receiver, eph, empty, mac1, mac2 = _RESPONSE.unpack(data)
        return Response(sender, receiver, eph, empty, mac1, mac2)
    if kind == MESSAGE_COOKIE_REPLY:
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
        return CookieReply(receiver, nonce, cookie)
    _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
    return Transport(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))


def transport_header(receiver: int, counter: int) -> bytes:
    return _TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, receiver, counter)


def unpack_transport_header(data: bytes) -> tuple[int, int]:
    """(receiver, counter) of a transport message already validated by :func:`message_type`."""
    _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
    return receiver, counter


def mac1_offset(kind: int) -> int:
    return INITIATION_MAC1_OFFSET if kind == MESSAGE_INITIATION else RESPONSE_MAC1_OFFSET
