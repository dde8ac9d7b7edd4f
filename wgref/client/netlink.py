"""Just enough netlink for nfnetlink: message and attribute (de)serialisation."""

from __future__ import annotations

import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11

HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big-endian)
ATTR = struct.Struct("=HH")


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = ATTR.size + len(payload)
    return ATTR.pack(length, kind) + payload + b"\0" * (align(length) - length)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def nfgen(family: int, res_id: int) -> bytes:
    return struct.pack("=BB", family, 0) + struct.pack(">H", res_id)


def message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload + b"\0" * (
        align(len(payload)) - len(payload)
    )


def messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) for each message in a received buffer."""
    view = memoryview(data)
    offset = 0
    while offset + HEADER.size <= len(view):
        length, kind, flags, seq, _pid = HEADER.unpack_from(view, offset)
        if length < HEADER.size or offset + length > len(view):
            return
        yield kind, flags, seq, view[offset + HEADER.size : offset + length]
        offset += align(length)


def attributes(data: memoryview | bytes) -> dict[int, memoryview]:
    """Attributes by type (the last one wins); malformed tails are ignored."""
    view = memoryview(data)
    found: dict[int, memoryview] = {}
    offset = 0
    while offset + ATTR.size <= len(view):
        length, kind = ATTR.unpack_from(view, offset)
        if length < ATTR.size or offset + length > len(view):
            break
        found[kind & NLA_TYPE_MASK] = view[offset + ATTR.size : offset + length]
        offset += align(length)
    return found


def error_code(payload: memoryview) -> int:
    """The (positive) errno of an NLMSG_ERROR payload; 0 for an ACK."""
    (code,) = struct.unpack_from("=i", payload, 0)
    return -int(code)
