"""Splitting UDP GSO super-frames: segment sizes from crafted payloads, and whole captures whose
super-frames are built from the real transport messages of the reference capture (WP 5.4.6
messages of one session: frames 3, 5, 7 are 128 bytes, 9 a 32-byte keepalive, 12 112 bytes)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from wgref.capture import UdpDatagram, read_capture, write_pcap
from wgref.decrypt import DecodeResult, decode_capture
from wgref.gso import segment_sizes, split
from wgref.keylog import KeyLog, load_keylog

PING = "wireguard-ping-tcp.pcap"
KEYS = "wireguard-ping-tcp.responder.keys"


def transport(receiver: int, counter: int, size: int, seed: int = 0) -> bytes:
    body = random.Random(f"{seed}-{counter}").randbytes(size - 16)
    return struct.pack("<IIQ", 4, receiver, counter) + body


# ------------------------------------------------------------------ segment sizes (no keys)


def test_equal_segments() -> None:
    payload = b"".join(transport(7, n, 100) for n in range(3))
    sizes = segment_sizes(payload)
    assert sizes[0] == 100  # 200 also cuts well-formed pieces: the smallest comes first
    assert split(payload, sizes[0]) == [payload[:100], payload[100:200], payload[200:]]


def test_short_last_segment() -> None:
    payload = transport(7, 0, 100) + transport(7, 1, 100) + transport(7, 2, 32)
    assert segment_sizes(payload)[0] == 100
    assert [len(s) for s in split(payload, 100)] == [100, 100, 32]


def test_one_segment_is_not_split() -> None:
    assert segment_sizes(transport(7, 0, 1452)) == []
    assert segment_sizes(bytes([1, 0, 0, 0]) + bytes(144)) == []  # an initiation


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x04\x00\x00",
        random.Random(1).randbytes(3000),
        b"\x09\x00\x00\x00" + transport(7, 0, 100),  # no WireGuard type first
        transport(7, 0, 100) + b"\x04\x00\x00\x00" + bytes(10),  # last piece too short
        transport(7, 0, 100) + transport(8, 1, 100),  # another receiver: not one batch
        bytes([1, 0, 0, 0]) + bytes(144) + b"junk",  # an initiation with bytes after it
    ],
)
def test_garbage_is_not_split(payload: bytes) -> None:
    assert segment_sizes(payload) == []


def test_handshake_messages_split_at_their_size() -> None:
    initiation = bytes([1, 0, 0, 0]) + bytes(144)
    assert segment_sizes(initiation * 3) == [148]


def test_split_rejects_a_zero_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        split(b"abc", 0)


# ------------------------------------------------------------------ whole captures, with keys


def super_frame_capture(tmp_path: Path, captures: Path, groups: list[list[int]]) -> Path:
    """The reference handshake (frames 1, 2), then one datagram per group of reference frames,
    their payloads concatenated as a GSO sender's buffer."""
    reference = {d.frame: d for d in read_capture(captures / PING).datagrams}
    rows = [(reference[n].time, reference[n].src, reference[n].dst, reference[n].payload)
            for n in (1, 2)]
    for group in groups:
        first = reference[group[0]]
        payload = b"".join(reference[n].payload for n in group)
        rows.append((first.time, first.src, first.dst, payload))
    path = tmp_path / "gso.pcap"
    write_pcap(path, rows)
    return path


def decode(path: Path, keylog: KeyLog) -> DecodeResult:
    return decode_capture(read_capture(path), keylog)


@pytest.mark.parametrize(
    ("group", "lengths", "counters"),
    [
        ([3, 5, 7], [128, 128, 128], [0, 1, 2]),  # equal segments
        ([5, 7, 9], [128, 128, 32], [1, 2, 3]),  # short last segment: a keepalive
        ([3, 5, 12], [128, 128, 112], [0, 1, 4]),
    ],
)
def test_super_frames_decrypt_whole(
    tmp_path: Path, captures: Path, group: list[int], lengths: list[int], counters: list[int]
) -> None:
    path = super_frame_capture(tmp_path, captures, [group])
    result = decode(path, load_keylog(captures / KEYS))
    transports = [f for f in result.frames if f["type"] == 4]
    assert [f["udp_payload_len"] for f in transports] == lengths
    assert [f["counter"] for f in transports] == counters
    assert all(f["frame"] == 3 and f["segments"] == 3 for f in transports)
    assert [f["segment"] for f in transports] == [1, 2, 3]
    assert all(f["segment_size"] == 128 for f in transports)
    assert all("inner" in f for f in transports)
    assert result.undecrypted == [] and list(result.splits) == [3]


def test_multiples_of_the_segment_size_do_not_authenticate(
    tmp_path: Path, captures: Path
) -> None:
    # Four 128-byte messages: 256 and 384 also cut well-formed pieces; only 128 authenticates.
    path = super_frame_capture(tmp_path, captures, [[3, 5, 7, 15]])
    payload = read_capture(path).datagrams[2].payload
    assert segment_sizes(payload) == [128, 256, 384]
    transports = [f for f in decode(path, load_keylog(captures / KEYS)).frames if f["type"] == 4]
    assert [f["counter"] for f in transports] == [0, 1, 2, 5]


def test_one_message_datagrams_are_unchanged(tmp_path: Path, captures: Path) -> None:
    path = super_frame_capture(tmp_path, captures, [[3], [5]])
    result = decode(path, load_keylog(captures / KEYS))
    assert all("segment" not in f for f in result.frames) and result.splits == {}
    assert [f["counter"] for f in result.frames if f["type"] == 4] == [0, 1]


def test_without_keys_the_smallest_size_frames_the_messages(
    tmp_path: Path, captures: Path
) -> None:
    path = super_frame_capture(tmp_path, captures, [[3, 5, 7]])
    transports = [f for f in decode(path, KeyLog()).frames if f["type"] == 4]
    assert [f["counter"] for f in transports] == [0, 1, 2]
    assert all("inner" not in f for f in transports)


def test_a_corrupted_segment_is_reported_and_the_others_decrypt(
    tmp_path: Path, captures: Path
) -> None:
    path = super_frame_capture(tmp_path, captures, [[3, 5, 7]])
    capture = read_capture(path)
    datagram = capture.datagrams[2]
    broken = bytearray(datagram.payload)
    broken[128 + 40] ^= 0xFF  # inside the second message's ciphertext
    capture.datagrams[2] = UdpDatagram(
        datagram.frame, datagram.time, datagram.src, datagram.dst, bytes(broken)
    )
    result = decode_capture(capture, load_keylog(captures / KEYS))
    transports = [f for f in result.frames if f["type"] == 4]
    assert ["inner" in f for f in transports] == [True, False, True]
    assert transports[1]["decrypt_ok"] is False
    assert result.undecrypted == [3]
