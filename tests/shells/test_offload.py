"""TUN offloads: checksums, TSO super-packet splitting and userspace GRO (wgref.offload).

Every checksum is verified against a plain RFC 1071 sum written here, and every split is
checked against the segments the kernel's TSO fallback would make.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgref import offload
from wgref.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VNET_HDR,
    VNET_HDR_LEN,
    ZERO_VNET_HDR,
    checksum,
    coalesce,
    split_frame,
)

FIN, SYN, PSH, ACK, CWR = 0x01, 0x02, 0x08, 0x10, 0x80
SRC4, DST4 = ipaddress.IPv4Address("10.0.0.1").packed, ipaddress.IPv4Address("10.0.0.2").packed
SRC6, DST6 = ipaddress.IPv6Address("fd00::1").packed, ipaddress.IPv6Address("fd00::2").packed
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack(">II", 123456, 654321)


def rfc1071(data: bytes) -> int:
    """The Internet checksum, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(packet: bytes, length: int, proto: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack(">BBH", 0, proto, length)
    return packet[8:40] + struct.pack(">IxxxB", length, proto)


def tcp_offset(packet: bytes) -> int:
    return (packet[0] & 15) * 4 if packet[0] >> 4 == 4 else 40


def assert_valid(packet: bytes) -> None:
    """IP lengths and checksums and the TCP/UDP checksum are right."""
    off = tcp_offset(packet)
    if packet[0] >> 4 == 4:
        assert struct.unpack_from(">H", packet, 2)[0] == len(packet)
        assert rfc1071(packet[:off]) == 0
        proto = packet[9]
    else:
        assert struct.unpack_from(">H", packet, 4)[0] == len(packet) - 40
        proto = packet[6]
    segment = packet[off:]
    assert rfc1071(pseudo_header(packet, len(segment), proto) + segment) == 0


def tcp_packet(
    version: int,
    payload: bytes,
    *,
    seq: int = 1000,
    flags: int = ACK,
    ident: int = 7,
    options: bytes = TIMESTAMPS,
    ports: tuple[int, int] = (40000, 5201),
    ack: int = 99,
    window: int = 512,
    ip_options: bytes = b"",
) -> bytes:
    """A TCP segment with correct lengths and checksums."""
    tcp = struct.pack(
        ">HHIIBBHHH", *ports, seq, ack, (20 + len(options)) // 4 << 4, flags, window, 0, 0
    )
    tcp += options
    if version == 4:
        ihl = 20 + len(ip_options)
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + len(tcp) + len(payload), ident,
            0x4000, 64, 6, 0, SRC4, DST4,
        ) + ip_options  # fmt: skip
        ip = ip[:10] + struct.pack(">H", rfc1071(ip)) + ip[12:]
    else:
        ip = struct.pack(">IHBB16s16s", 6 << 28, len(tcp) + len(payload), 6, 64, SRC6, DST6)
    packet = ip + tcp + payload
    csum = rfc1071(pseudo_header(packet, len(tcp) + len(payload), 6) + tcp + payload)
    at = len(ip) + 16
    return packet[:at] + struct.pack(">H", csum) + packet[at + 2 :]


def tso_frame(packet: bytes, mss: int, ecn: bool = False) -> bytes:
    """``packet`` as the kernel hands a TSO super-packet: NEEDS_CSUM with the pseudo-header
    sum (not complemented) in the TCP checksum field."""
    off = tcp_offset(packet)
    th = off + (packet[off + 12] >> 4) * 4
    length = len(packet) - off
    partial = ~rfc1071(pseudo_header(packet, length, 6)) & 0xFFFF
    packet = packet[: off + 16] + struct.pack(">H", partial) + packet[off + 18 :]
    gso = VIRTIO_NET_HDR_GSO_TCPV4 if packet[0] >> 4 == 4 else VIRTIO_NET_HDR_GSO_TCPV6
    if ecn:
        gso |= VIRTIO_NET_HDR_GSO_ECN
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, th, mss, off, 16) + packet


def fields(packet: bytes) -> tuple[int, int, int, bytes]:
    """(sequence, flags, IPv4 id, payload)."""
    off = tcp_offset(packet)
    th = off + (packet[off + 12] >> 4) * 4
    ident = struct.unpack_from(">H", packet, 4)[0] if packet[0] >> 4 == 4 else 0
    return struct.unpack_from(">I", packet, off + 4)[0], packet[off + 13], ident, packet[th:]


# ----------------------------------------------------------------- checksum


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFE))
def test_checksum_matches_rfc1071(data: bytes, initial: int) -> None:
    value = checksum(data, initial)
    # ``initial`` is a partial sum: the same as one more 16-bit word.
    padded = data + b"\0" if len(data) % 2 else data
    assert value == rfc1071(padded + initial.to_bytes(2, "big"))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 19, 20, 1023, 1024, 1025, 1420, 9000, 65535])
def test_checksum_sizes(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert checksum(data) == rfc1071(data)
    assert checksum(b"\xff" * size) == rfc1071(b"\xff" * size)


# ----------------------------------------------------------------- split (TSO)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize(
    ("size", "mss"), [(1, 1368), (1368, 1368), (1369, 1368), (65000, 1368), (5000, 1000)]
)
@pytest.mark.parametrize("last_flags", [ACK, ACK | PSH, ACK | PSH | FIN])
def test_split_like_kernel_tso(version: int, size: int, mss: int, last_flags: int) -> None:
    payload = random.Random(size).randbytes(size)
    seq0 = 0xFFFFF000  # wraps during the run
    whole = tcp_packet(version, payload, seq=seq0, flags=last_flags, ident=0xFFFE)
    segments = split_frame(tso_frame(whole, mss))
    assert len(segments) == -(-size // mss)
    assert b"".join(fields(s)[3] for s in segments) == payload
    for i, segment in enumerate(segments):
        assert_valid(segment)
        seq, flags, ident, data = fields(segment)
        assert seq == (seq0 + i * mss) & 0xFFFFFFFF
        assert len(data) == (mss if i < len(segments) - 1 else size - i * mss)
        assert flags == (last_flags if i == len(segments) - 1 else ACK)
        if version == 4:
            assert ident == (0xFFFE + i) & 0xFFFF
        # Byte for byte what a sender segmenting by hand would have made.
        expected = tcp_packet(version, data, seq=seq, flags=flags, ident=(0xFFFE + i) & 0xFFFF)
        assert segment == expected


def test_split_cwr_on_first_only_and_ipv4_options() -> None:
    payload = bytes(range(256)) * 20
    whole = tcp_packet(4, payload, flags=ACK | CWR | PSH, ip_options=b"\x01\x01\x01\x00")
    segments = split_frame(tso_frame(whole, 1000, ecn=True))
    assert [fields(s)[1] for s in segments] == [ACK | CWR] + [ACK] * 4 + [ACK | PSH]
    for segment in segments:
        assert_valid(segment)
        assert segment[:1] == b"\x46" and segment[20:24] == b"\x01\x01\x01\x00"


@pytest.mark.parametrize("proto", [6, 17])
@pytest.mark.parametrize("version", [4, 6])
def test_needs_csum_is_completed(version: int, proto: int) -> None:
    if proto == 6:
        packet = tcp_packet(version, b"hello world", flags=ACK | PSH)
    else:
        payload = b"\x00\x35\x00\x35\x00\x0f\x00\x00abcdefg"
        if version == 4:
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 15, 1, 0, 64, 17, 0, SRC4, DST4)
            ip = ip[:10] + struct.pack(">H", rfc1071(ip)) + ip[12:]
        else:
            ip = struct.pack(">IHBB16s16s", 6 << 28, 15, 17, 64, SRC6, DST6)
        packet = ip + payload
    off = tcp_offset(packet)
    at = off + (16 if proto == 6 else 6)
    partial = ~rfc1071(pseudo_header(packet, len(packet) - off, proto)) & 0xFFFF
    kernel = packet[:at] + struct.pack(">H", partial) + packet[at + 2 :]
    frame = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, off, at - off) + kernel
    (out,) = split_frame(frame)
    assert_valid(out)
    assert out[:at] == packet[:at] and out[at + 2 :] == packet[at + 2 :]


def test_plain_frame_passes_unchanged() -> None:
    packet = tcp_packet(4, b"x" * 100)
    assert split_frame(ZERO_VNET_HDR + packet) == [packet]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        ZERO_VNET_HDR,
        VNET_HDR.pack(0, 3, 0, 1000, 0, 0) + tcp_packet(4, bytes(3000)),  # UFO: not asked for
        VNET_HDR.pack(0, 1, 0, 1000, 0, 0) + tcp_packet(4, bytes(3000)),  # TSO, no offsets
        VNET_HDR.pack(1, 1, 0, 1000, 20, 16) + tcp_packet(4, bytes(3000))[:30],  # truncated
        VNET_HDR.pack(1, 0, 0, 0, 5000, 16) + tcp_packet(4, bytes(30)),  # offsets outside
    ],
)
def test_bad_frames_raise(frame: bytes) -> None:
    with pytest.raises(ValueError):
        split_frame(frame)


# ----------------------------------------------------------------- coalesce (GRO)


def segments_of(version: int, size: int, mss: int, **kw: int) -> list[bytes]:
    payload = random.Random(size + mss).randbytes(size)
    return split_frame(tso_frame(tcp_packet(version, payload, flags=ACK | PSH, **kw), mss))


def parse_frame(frame: bytes) -> tuple[tuple[int, ...], bytes]:
    return VNET_HDR.unpack_from(frame), frame[VNET_HDR_LEN:]


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("size", [2 * 1368, 10 * 1368 + 5, 47 * 1368])
def test_coalesce_then_split_roundtrip(version: int, size: int) -> None:
    segments = segments_of(version, size, 1368)
    frames = coalesce(segments)
    # 64 KiB at most per super-packet: 47 segments of 1368 bytes need two.
    assert len(frames) == (1 if size < 65535 - 52 else 2)
    again = []
    for frame in frames:
        (flags, gso_type, hdr_len, gso_size, start, offset), packet = parse_frame(frame)
        assert len(packet) <= 65535 + (40 if version == 6 else 0)
        off = tcp_offset(packet)
        assert (flags, hdr_len, gso_size, start, offset) == (1, off + 32, 1368, off, 16)
        assert gso_type == (VIRTIO_NET_HDR_GSO_TCPV4 if version == 4 else 4)
        # The field holds the pseudo-header sum for the kernel to complete.
        partial = struct.unpack_from(">H", packet, off + 16)[0]
        expected = ~rfc1071(pseudo_header(packet, len(packet) - off, 6)) & 0xFFFF
        assert partial % 0xFFFF == expected % 0xFFFF
        if version == 4:
            assert rfc1071(packet[:20]) == 0
        again += split_frame(frame)
    assert again == segments


def test_coalesce_keeps_flows_apart_and_in_order() -> None:
    a = segments_of(4, 4 * 1000, 1000, ports=(1, 2))
    b = segments_of(4, 4 * 1000, 1000, ports=(3, 4))
    interleaved = [p for pair in zip(a, b, strict=True) for p in pair]
    frames = coalesce(interleaved)
    assert len(frames) == 2
    assert split_frame(frames[0]) == a and split_frame(frames[1]) == b


def test_coalesce_breaks_runs() -> None:
    seg = segments_of(4, 6 * 1000, 1000)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, SRC4, DST4)
    udp_packet = ip[:10] + struct.pack(">H", rfc1071(ip)) + ip[12:] + bytes(8)
    syn = tcp_packet(4, b"", flags=SYN, ports=(9, 9))
    # Out of order: 0 1 3 2 4 5 -> [0 1] [3] [2] [4 5]; non-TCP and SYN pass alone.
    packets = [seg[0], seg[1], udp_packet, seg[3], seg[2], syn, seg[4], seg[5]]
    frames = coalesce(packets)
    kinds = [(VNET_HDR.unpack_from(f)[1], len(split_frame(f))) for f in frames]
    assert kinds == [(1, 2), (0, 1), (0, 1), (0, 1), (0, 1), (1, 2)]
    assert frames[1] == ZERO_VNET_HDR + udp_packet and frames[4] == ZERO_VNET_HDR + syn


def test_coalesce_requires_equal_headers() -> None:
    seg = segments_of(4, 3 * 1000, 1000)
    other_ack = tcp_packet(4, fields(seg[1])[3], seq=fields(seg[1])[0], ident=fields(seg[1])[2],
                           ack=100)  # fmt: skip
    assert len(coalesce([seg[0], other_ack, seg[2]])) == 3
    # A short segment ends the run; so does PSH.
    short = segments_of(4, 1500, 1000)  # 1000 + 500 (PSH)
    assert len(coalesce(short)) == 1
    assert len(coalesce([*short, *segments_of(4, 2000, 1000, seq=2500, ident=9)])) == 2
    # A jump in the IPv4 id breaks the run as the kernel's GRO would.
    jump = [seg[0], tcp_packet(4, fields(seg[1])[3], seq=fields(seg[1])[0], ident=77)]
    assert len(coalesce(jump)) == 2


def test_single_packets_get_zero_header() -> None:
    packet = tcp_packet(6, b"abc")
    assert coalesce([packet]) == [ZERO_VNET_HDR + packet]
    assert coalesce([]) == []


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([4, 6]),
    st.integers(1, 20000),
    st.integers(200, 1500),
    st.randoms(use_true_random=False),
)
def test_coalesce_preserves_every_flow(
    version: int, size: int, mss: int, rng: random.Random
) -> None:
    """Whatever the mix, splitting what coalesce wrote gives each flow's packets in order."""
    flows = [segments_of(version, size + i, mss, ports=(i, i)) for i in range(3)]
    mixed: list[bytes] = []
    queues = [list(f) for f in flows]
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        mixed.append(queue.pop(0))
    out = [p for frame in coalesce(mixed) for p in split_frame(frame)]
    for i, flow in enumerate(flows):
        source_port = struct.pack(">H", i)
        assert [p for p in out if p[tcp_offset(p) : tcp_offset(p) + 2] == source_port] == flow


# ----------------------------------------------------------------- per-segment sums (numpy)


def word_sum(data: bytes) -> int:
    """The ones' complement sum of big-endian words, word by word, mod 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f">{len(data) // 2}H", data)) % 0xFFFF


SEGMENT_SUMS = [offload._segment_sums_python, offload._segment_sums_numpy]


@pytest.mark.parametrize("sums", SEGMENT_SUMS, ids=["python", "numpy"])
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=20000), mss=st.integers(1, 3000))
def test_segment_sums_match_word_by_word(
    sums: Callable[[memoryview, int], list[int]], data: bytes, mss: int
) -> None:
    """Both implementations give each segment's word sum, odd lengths and odd mss included."""
    expected = [word_sum(data[at : at + mss]) for at in range(0, len(data), mss)]
    assert sums(memoryview(data), mss) == expected


@pytest.mark.parametrize("sums", SEGMENT_SUMS, ids=["python", "numpy"])
@pytest.mark.parametrize("fill", [0x00, 0xFF])
@pytest.mark.parametrize("mss", [1366, 1368, 1369, 16384])
def test_segment_sums_extremes(
    sums: Callable[[memoryview, int], list[int]], fill: int, mss: int
) -> None:
    """All-zero and all-ones 64 KiB payloads (the two representations of zero); 16- and
    32-bit words, an odd mss, large segments."""
    data = bytes([fill]) * 65483
    expected = [word_sum(data[at : at + mss]) for at in range(0, len(data), mss)]
    assert sums(memoryview(data), mss) == expected


def test_numpy_is_the_default_when_installed() -> None:
    assert offload._segment_sums is offload._segment_sums_numpy


def test_pure_python_without_numpy() -> None:
    """Without the [fast] extra the module imports and takes the pure-Python sums."""
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from wgref import offload\n"
        "assert not offload._HAVE_NUMPY\n"
        "assert offload._segment_sums is offload._segment_sums_python\n"
        "print(offload._segment_sums(memoryview(bytes(range(256)) * 40), 1000))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    ).stdout
    data = bytes(range(256)) * 40
    assert out.strip() == str([word_sum(data[at : at + 1000]) for at in range(0, 10240, 1000)])


@settings(max_examples=40, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    payload=st.binary(min_size=1, max_size=30000),
    mss=st.integers(100, 9000),
    flags=st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR]),
    seq=st.integers(0, 0xFFFFFFFF),
)
def test_split_is_the_same_with_and_without_numpy(
    version: int, payload: bytes, mss: int, flags: int, seq: int
) -> None:
    """The numpy path and the pure-Python path cut byte-for-byte the same segments."""
    frame = tso_frame(tcp_packet(version, payload, seq=seq, flags=flags), mss)
    default = offload._segment_sums
    try:
        offload._segment_sums = offload._segment_sums_python
        pure = split_frame(frame)
    finally:
        offload._segment_sums = default
    assert split_frame(frame) == pure
    for segment in pure:
        assert_valid(segment)
