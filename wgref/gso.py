"""Split UDP GSO/GRO super-frames of a capture back into the WireGuard messages they carry.

A sender using UDP_SEGMENT (wgref, wireguard-go since 2023) hands the kernel one buffer of
several messages and a segment size; a capture taken before segmentation (or after UDP GRO on
receive) shows that buffer as one datagram. Every segment but the last has the segment size, the
last is 1..size bytes (kernel net/ipv4/udp_offload.c: __udp_gso_segment). The size is not in the
capture, so it is found from the messages themselves: each segment starts with a WireGuard
header (WP 5.4: type, three zero bytes), handshake messages have their exact sizes, and the
transport messages of one batch go to one receiver index. A transport message authenticates
only at its true length, so a caller holding the session key confirms the size by decrypting
the first segment (see :mod:`wgref.decrypt`).
"""

from __future__ import annotations

import struct
from typing import Final

from .constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RESPONSE_SIZE,
    TRANSPORT_MIN_SIZE,
)

__all__ = ["segment_sizes", "split"]

_FIXED_SIZES: Final = {
    MESSAGE_INITIATION: INITIATION_SIZE,
    MESSAGE_RESPONSE: RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}
_TRANSPORT_HEADER: Final = struct.pack("<I", MESSAGE_TRANSPORT)


def _header_type(data: bytes, offset: int) -> int | None:
    """The message type at ``offset`` when it is a WireGuard header (type 1-4, reserved zero)."""
    if offset + 4 > len(data) or data[offset + 1 : offset + 4] != b"\0\0\0":
        return None
    kind = data[offset]
    return kind if MESSAGE_INITIATION <= kind <= MESSAGE_TRANSPORT else None


def _segment_valid(segment: bytes, receiver: bytes | None) -> bool:
    kind = _header_type(segment, 0)
    if kind is None:
        return False
    if kind == MESSAGE_TRANSPORT:
        # The transport messages of one batch share the receiver index (one peer per send).
        return len(segment) >= TRANSPORT_MIN_SIZE and (
            receiver is None or segment[4:8] == receiver
        )
    return len(segment) == _FIXED_SIZES[kind]


def _consistent(payload: bytes, size: int) -> bool:
    first_kind = payload[0]
    receiver = payload[4:8] if first_kind == MESSAGE_TRANSPORT else None
    return all(
        _segment_valid(payload[offset : offset + size], receiver)
        for offset in range(0, len(payload), size)
    )


def segment_sizes(payload: bytes) -> list[int]:
    """The segment sizes that cut ``payload`` into two or more well-formed WireGuard messages,
    smallest first (a multiple of the true size also cuts well: the smallest is the likeliest).
    Empty when the payload is one message, or is not WireGuard at all."""
    kind = _header_type(payload, 0)
    if kind is None:
        return []
    if kind != MESSAGE_TRANSPORT:
        size = _FIXED_SIZES[kind]
        return [size] if len(payload) > size and _consistent(payload, size) else []
    sizes = []
    offset = payload.find(_TRANSPORT_HEADER, TRANSPORT_MIN_SIZE)
    while offset != -1:
        if _consistent(payload, offset):
            sizes.append(offset)
        offset = payload.find(_TRANSPORT_HEADER, offset + 1)
    return sizes


def split(payload: bytes, size: int) -> list[bytes]:
    """``payload`` cut into segments of ``size`` bytes (the last one may be shorter)."""
    if size <= 0:
        raise ValueError(f"segment size must be positive, got {size}")
    return [payload[offset : offset + size] for offset in range(0, len(payload), size)]
