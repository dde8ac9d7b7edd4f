"""Message layouts, sizes and strict parsing (WP 5.4.2-5.4.7)."""

from __future__ import annotations

import struct

import pytest

from wgref import messages
from wgref.constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RESPONSE_SIZE,
    TRANSPORT_MIN_SIZE,
)
from wgref.errors import ProtocolError
from wgref.messages import CookieReply, Initiation, Response, Transport, message_type, parse


def b(n: int, fill: int) -> bytes:
    return bytes([fill]) * n


INITIATION = Initiation(0x11223344, b(32, 1), b(48, 2), b(28, 3), b(16, 4), b(16, 5))
RESPONSE = Response(0x01020304, 0xA0B0C0D0, b(32, 6), b(16, 7), b(16, 8), b(16, 9))
COOKIE = CookieReply(0xDEADBEEF, b(24, 10), b(32, 11))
TRANSPORT = Transport(0x55667788, 0x0102030405060708, b(48, 12))
KEEPALIVE = Transport(7, 0, b(16, 13))

SIZES = {
    MESSAGE_INITIATION: INITIATION_SIZE,
    MESSAGE_RESPONSE: RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}


def test_sizes() -> None:
    assert (INITIATION_SIZE, RESPONSE_SIZE, COOKIE_REPLY_SIZE, TRANSPORT_MIN_SIZE) == (
        148,
        92,
        64,
        32,
    )
    assert len(INITIATION.to_bytes()) == 148
    assert len(RESPONSE.to_bytes()) == 92
    assert len(COOKIE.to_bytes()) == 64
    assert len(KEEPALIVE.to_bytes()) == 32
    assert len(TRANSPORT.to_bytes()) == 16 + 48


def test_initiation_layout() -> None:
    data = INITIATION.to_bytes()
    assert data[:4] == b"\x01\x00\x00\x00"
    assert data[4:8] == struct.pack("<I", 0x11223344)
    assert data[8:40] == b(32, 1)
    assert data[40:88] == b(48, 2)
    assert data[88:116] == b(28, 3)
    assert data[116:132] == b(16, 4)  # mac1 at messages.INITIATION_MAC1_OFFSET
    assert data[132:148] == b(16, 5)
    assert messages.INITIATION_MAC1_OFFSET == 116
    assert messages.mac1_offset(MESSAGE_INITIATION) == 116


def test_response_layout() -> None:
    data = RESPONSE.to_bytes()
    assert data[:4] == b"\x02\x00\x00\x00"
    assert data[4:8] == struct.pack("<I", 0x01020304)
    assert data[8:12] == struct.pack("<I", 0xA0B0C0D0)
    assert data[12:44] == b(32, 6)
    assert data[44:60] == b(16, 7)
    assert data[60:76] == b(16, 8)
    assert data[76:92] == b(16, 9)
    assert messages.mac1_offset(MESSAGE_RESPONSE) == 60


def test_cookie_reply_layout() -> None:
    data = COOKIE.to_bytes()
    assert data[:4] == b"\x03\x00\x00\x00"
    assert data[4:8] == struct.pack("<I", 0xDEADBEEF)
    assert data[8:32] == b(24, 10)
    assert data[32:64] == b(32, 11)


def test_transport_layout() -> None:
    data = TRANSPORT.to_bytes()
    assert data[:4] == b"\x04\x00\x00\x00"
    assert data[4:8] == struct.pack("<I", 0x55667788)
    assert data[8:16] == struct.pack("<Q", 0x0102030405060708)  # little-endian counter
    assert data[16:] == b(48, 12)
    assert messages.unpack_transport_header(data) == (0x55667788, 0x0102030405060708)
    assert messages.transport_header(1, 2) == struct.pack("<IIQ", 4, 1, 2)


@pytest.mark.parametrize("message", [INITIATION, RESPONSE, COOKIE, TRANSPORT, KEEPALIVE])
def test_round_trip(message: messages.Message) -> None:
    data = message.to_bytes()
    parsed = parse(data)
    assert parsed == message
    assert parsed.to_bytes() == data


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = TRANSPORT.to_bytes()
    assert parse(bytearray(data)) == TRANSPORT
    assert parse(memoryview(data)) == TRANSPORT
    assert isinstance(parse(memoryview(data)).encrypted, bytes)  # type: ignore[union-attr]


def test_message_type() -> None:
    assert message_type(INITIATION.to_bytes()) == MESSAGE_INITIATION
    assert message_type(RESPONSE.to_bytes()) == MESSAGE_RESPONSE
    assert message_type(COOKIE.to_bytes()) == MESSAGE_COOKIE_REPLY
    assert message_type(KEEPALIVE.to_bytes()) == MESSAGE_TRANSPORT
    assert message_type(TRANSPORT.to_bytes() + bytes(2000)) == MESSAGE_TRANSPORT


def reason_of(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse(data)
    with pytest.raises(ProtocolError) as info2:
        message_type(data)
    assert info.value.reason == info2.value.reason
    return info.value.reason


@pytest.mark.parametrize("kind", [1, 2, 3])
@pytest.mark.parametrize("delta", [-1, 1, -4, 16])
def test_wrong_size_handshake_messages(kind: int, delta: int) -> None:
    size = SIZES[kind]
    data = struct.pack("<I", kind) + bytes(size - 4 + delta)
    assert reason_of(data) == "bad-size"


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_handshake_message_sized_as_another(kind: int) -> None:
    for other_size in {148, 92, 64, 32} - {SIZES[kind]}:
        assert reason_of(struct.pack("<I", kind) + bytes(other_size - 4)) == "bad-size"


@pytest.mark.parametrize("size", [4, 16, 31])
def test_short_transport(size: int) -> None:
    assert reason_of(struct.pack("<I", 4) + bytes(size - 4)) == "bad-size"


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_too_short(size: int) -> None:
    assert reason_of(b"\x01" * size) == "too-short"


@pytest.mark.parametrize("kind", [0, 5, 6, 0x7F, 0x80, 0xFF])
def test_unknown_type(kind: int) -> None:
    assert reason_of(bytes([kind, 0, 0, 0]) + bytes(144)) == "bad-type"


@pytest.mark.parametrize(
    "message", [INITIATION, RESPONSE, COOKIE, TRANSPORT], ids=["init", "resp", "cookie", "data"]
)
@pytest.mark.parametrize("position", [1, 2, 3])
@pytest.mark.parametrize("value", [1, 0x80, 0xFF])
def test_nonzero_reserved(message: messages.Message, position: int, value: int) -> None:
    data = bytearray(message.to_bytes())
    data[position] = value
    assert reason_of(bytes(data)) == "bad-reserved"


def test_unknown_type_with_reserved_bytes_is_still_rejected() -> None:
    with pytest.raises(ProtocolError):
        parse(b"\x09\x01\x00\x00" + bytes(144))


def test_protocol_error_is_a_value_error_with_reason() -> None:
    err = ProtocolError("bad-size", "detail")
    assert isinstance(err, ValueError)
    assert err.reason == "bad-size"
    assert "detail" in str(err)
    assert str(ProtocolError("replay")) == "replay"
