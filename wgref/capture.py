"""Read pcap/pcapng captures into UDP datagrams (plus pcapng WireGuard key-log DSBs); write pcap;
re-cut a frame's UDP datagram into several (splitting GSO super-frames).

Files are read with scapy's raw readers and each frame's link layer is decoded with scapy's
layers. IP fragments, non-UDP frames and datagrams cut short by the snap length are skipped.
A file that ends inside a record is reported (``Capture.cut_short_after``): scapy's readers
stop there silently.
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final

from scapy.config import conf
from scapy.error import Scapy_Exception
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Packet, Raw
from scapy.utils import PcapWriter, RawPcapNgReader, RawPcapReader

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "WGKL_SECRETS_TYPE",
    "Capture",
    "CaptureError",
    "RawFrame",
    "UdpDatagram",
    "iter_frames",
    "read_capture",
    "resegment",
    "write_pcap",
]

WGKL_SECRETS_TYPE: Final = 0x57474B4C  # pcapng DSB secrets type "WGKL"
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101

_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_PCAPNG_PACKET_BLOCKS: Final = (2, 3, 6)  # obsolete Packet, Simple Packet, Enhanced Packet
_PCAPNG_BYTE_ORDER: Final = 0x1A2B3C4D
_PCAP_MAGICS: Final = {0xA1B2C3D4, 0xA1B23C4D}  # microsecond, nanosecond timestamps
_GZIP_MAGIC: Final = b"\x1f\x8b"
_IPV6_EXT_HEADERS: Final = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt)
# Fixed locally administered MACs: scapy would otherwise look the destination up (ARP).
_WRITE_SRC_MAC: Final = "02:00:00:00:00:01"
_WRITE_DST_MAC: Final = "02:00:00:00:00:02"
_SCAPY_MTU: Final = 0xFFFF  # scapy's readers return at most this much of a frame
_SCAPY_LOG: Final = logging.getLogger("scapy.runtime")

Endpoint = tuple[str, int]


class CaptureError(ValueError):
    """A capture file that is missing, unreadable or not a pcap/pcapng file."""


@dataclass(frozen=True)
class UdpDatagram:
    """One UDP datagram found in a capture."""

    frame: int  # 1-based frame number in the file, counting every frame (like Wireshark)
    time: float  # capture timestamp, seconds since the Unix epoch
    src: Endpoint
    dst: Endpoint
    payload: bytes
    time_ns: int = field(default=0, compare=False)  # the same timestamp, exact


@dataclass(frozen=True)
class RawFrame:
    """One frame of a capture file as stored: link type, exact timestamp and bytes."""

    number: int  # 1-based, like Wireshark
    linktype: int
    time_ns: int  # nanoseconds since the Unix epoch
    data: bytes
    wirelen: int  # the frame's length on the wire (more than len(data) if cut by the snaplen)


@dataclass
class Capture:
    """The UDP datagrams of a capture file, its frame count and embedded WireGuard key log."""

    datagrams: list[UdpDatagram] = field(default_factory=list)
    frame_count: int = 0
    embedded_keylog: str = ""  # concatenated WGKL DSB secrets ("" if none)
    cut_short_after: int | None = None  # the file ends inside the record after this frame


class _WgPcapNgReader(RawPcapNgReader):
    """scapy's raw pcapng reader, keeping the text of WireGuard key-log DSBs."""

    def __init__(self, filename: str, fdesc: IO[bytes], magic: bytes) -> None:
        self.wg_secrets: list[str] = []
        super().__init__(filename, fdesc, magic)

    def _read_block_dsb(self, block: bytes, size: int) -> None:
        # Secrets type u32, secrets length u32, data padded to 4 bytes, then options.
        if len(block) < 8:
            raise EOFError
        secrets_type, length = struct.unpack(self.endian + "II", block[:8])
        data = block[8 : 8 + length]
        if len(data) != length:
            raise EOFError
        if secrets_type == WGKL_SECRETS_TYPE:
            self.wg_secrets.append(data.decode("utf-8", errors="replace"))


@contextmanager
def _quiet_scapy() -> Iterator[None]:
    """Silence scapy's runtime warnings (unknown DSB types, odd blocks) while reading."""
    old = _SCAPY_LOG.level
    _SCAPY_LOG.setLevel(logging.ERROR)
    try:
        yield
    finally:
        _SCAPY_LOG.setLevel(old)


def _magic(path: str, f: IO[bytes]) -> bytes:
    """The first 4 bytes of the capture (inside gzip if compressed); leaves f at offset 0."""
    start = f.read(4)
    f.seek(0)
    if start[:2] != _GZIP_MAGIC:
        return start
    try:
        with gzip.GzipFile(fileobj=f) as gz:  # closing it leaves f open
            return gz.read(4)
    except (OSError, EOFError) as exc:
        raise CaptureError(f"{path}: not a capture file (bad gzip data: {exc})") from None
    finally:
        f.seek(0)


def _open_reader(path: str, f: IO[bytes]) -> Any:
    """A scapy raw reader for an open file, chosen by its magic number."""
    magic = _magic(path, f)
    if not magic:
        raise CaptureError(f"{path}: empty file, not a capture")
    # scapy's reader metaclass takes a file object; its stubs only know the __init__ signature.
    cls: Any = _WgPcapNgReader if magic == _PCAPNG_MAGIC else RawPcapReader
    try:
        return cls(f)
    except (Scapy_Exception, EOFError) as exc:
        raise CaptureError(f"{path}: not a pcap or pcapng capture ({exc})") from None


def _frame_time_ns(reader: Any, meta: Any) -> int:
    if isinstance(reader, RawPcapNgReader):
        if meta.tshigh is None:  # Simple Packet Block: no timestamp
            return 0
        return int(((meta.tshigh << 32) | meta.tslow) * 1_000_000_000 // meta.tsresol)
    return int(meta.sec * 1_000_000_000 + meta.usec * (1 if reader.nano else 1000))


def _read_exactly(f: IO[bytes], size: int) -> bool:
    """Consume ``size`` bytes; False when the file ends first."""
    while size > 0:
        chunk = f.read(min(size, 1 << 20))
        if not chunk:
            return False
        size -= len(chunk)
    return True


def _ends_inside_a_record(f: IO[bytes]) -> bool:
    """Walk the pcap records or pcapng blocks by their lengths: does the file end inside one?"""
    head = f.read(4)
    if head == _PCAPNG_MAGIC:
        f.seek(0)
        while True:
            start = f.read(12)  # block type, total length, first body word
            if not start:
                return False
            if len(start) < 12:
                return True
            kind = start[:4]
            if kind == _PCAPNG_MAGIC:  # a section header: its byte order comes next
                endian = "<" if struct.unpack("<I", start[8:])[0] == _PCAPNG_BYTE_ORDER else ">"
            length = struct.unpack(endian + "I", start[4:8])[0]
            if length < 12 or not _read_exactly(f, length - 12):
                return True
    for endian in "<>":
        if struct.unpack(endian + "I", head.ljust(4, b"\0"))[0] in _PCAP_MAGICS:
            break
    if not _read_exactly(f, 20):
        return True
    while True:
        record = f.read(16)
        if not record:
            return False
        if len(record) < 16:
            return True
        if not _read_exactly(f, struct.unpack_from(endian + "I", record, 8)[0]):
            return True


def _decode_udp(data: bytes, linktype: int) -> tuple[Endpoint, Endpoint, bytes] | None:
    """(src, dst, payload) of a frame's UDP datagram, or None for anything else."""
    cls = conf.l2types.num2layer.get(linktype)
    if cls is None:
        return None
    layer: Packet = cls(data)
    offset = 0
    ip_end: int | None = None
    ip: Packet | None = None
    while not isinstance(layer, NoPayload):
        kind = type(layer)
        if kind is IP:
            if layer.flags.MF or layer.frag:
                return None
            ip, ip_end = layer, offset + layer.len
        elif kind is IPv6:
            ip, ip_end = layer, offset + 40 + layer.plen
        elif kind is IPv6ExtHdrFragment:
            return None
        elif kind is UDP:
            break
        elif ip is not None and kind not in _IPV6_EXT_HEADERS:
            return None  # IP carrying something other than UDP
        header = layer.raw_packet_cache  # this layer's own bytes, kept by scapy's dissection
        if header is None:
            return None
        offset += len(header)
        layer = layer.payload
    else:
        return None
    if ip is None or ip_end is None:
        return None
    start, end = offset + 8, offset + layer.len
    if layer.len < 8 or end > ip_end or end > len(data):
        return None  # malformed, or truncated by the snap length
    return (ip.src, layer.sport), (ip.dst, layer.dport), data[start:end]


@contextmanager
def _opened(name: str) -> Iterator[IO[bytes]]:
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise CaptureError(f"{name}: cannot open capture ({exc.strerror or exc})") from None
    try:
        yield f
    except OSError as exc:
        raise CaptureError(f"{name}: cannot read capture ({exc.strerror or exc})") from None
    finally:
        f.close()


def _cut_short(name: str, f: IO[bytes]) -> bool:
    f.seek(0)
    if f.read(2) == _GZIP_MAGIC:
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f) as gz:
                return _ends_inside_a_record(gz)  # type: ignore[arg-type]
        except (OSError, EOFError):  # a gzip stream that itself ends early
            return True
    f.seek(0)
    return _ends_inside_a_record(f)


def _frames(name: str, f: IO[bytes], capture: Capture | None) -> Iterator[RawFrame]:
    with _quiet_scapy():
        reader = _open_reader(name, f)
        number = 0
        for data, meta in reader:
            caplen = getattr(meta, "caplen", None)  # pcap only: scapy returns a cut record
            if caplen is not None and len(data) < min(caplen, _SCAPY_MTU):
                break
            number += 1
            linktype = getattr(meta, "linktype", None)
            if linktype is None:
                linktype = reader.linktype
            wirelen = getattr(meta, "wirelen", None) or len(data)
            yield RawFrame(number, linktype, _frame_time_ns(reader, meta), data, wirelen)
        if capture is not None:
            capture.frame_count = number
            if isinstance(reader, _WgPcapNgReader):
                capture.embedded_keylog = "".join(reader.wg_secrets)
            if _cut_short(name, f):
                capture.cut_short_after = number


def iter_frames(path: str | os.PathLike[str]) -> Iterator[RawFrame]:
    """Every frame of a pcap or pcapng file (optionally gzipped), in file order."""
    name = os.fspath(path)
    with _opened(name) as f:
        yield from _frames(name, f, None)


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Read a pcap or pcapng file (optionally gzipped) into its UDP datagrams."""
    name = os.fspath(path)
    capture = Capture()
    with _opened(name) as f:
        for frame in _frames(name, f, capture):
            found = _decode_udp(frame.data, frame.linktype)
            if found is not None:
                src, dst, payload = found
                capture.datagrams.append(
                    UdpDatagram(
                        frame.number, frame.time_ns / 1e9, src, dst, payload, frame.time_ns
                    )
                )
    return capture


def resegment(frame: RawFrame, payloads: Sequence[bytes]) -> list[bytes]:
    """The frame once per payload, its UDP datagram carrying that payload: lengths and
    checksums rebuilt as the kernel's segmentation writes them (net/ipv4/udp_offload.c)."""
    cls = conf.l2types.num2layer.get(frame.linktype)
    if cls is None:
        raise ValueError(f"frame {frame.number}: unknown link type {frame.linktype}")
    packet: Packet = cls(frame.data)
    if UDP not in packet:
        raise ValueError(f"frame {frame.number}: no UDP datagram")
    out = []
    for payload in payloads:
        copy = packet.copy()
        udp = copy[UDP]
        udp.remove_payload()
        udp.add_payload(Raw(payload))
        del udp.len, udp.chksum
        if IP in copy:
            del copy[IP].len, copy[IP].chksum
        if IPv6 in copy:
            del copy[IPv6].plen
        out.append(bytes(copy))
    return out


def _udp_packet(src: Endpoint, dst: Endpoint, payload: bytes) -> Packet:
    if ipaddress.ip_address(src[0]).version != ipaddress.ip_address(dst[0]).version:
        raise ValueError(f"mixed address families: {src[0]} -> {dst[0]}")
    ip_cls = IPv6 if ipaddress.ip_address(src[0]).version == 6 else IP
    return ip_cls(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / payload


def write_pcap(
    path: str | os.PathLike[str],
    datagrams: Iterable[tuple[float, Endpoint, Endpoint, bytes]],
    linktype: int = LINKTYPE_RAW,
) -> None:
    """Write (time, src, dst, payload) UDP datagrams as a pcap, raw-IP (101) or Ethernet (1)."""
    if linktype not in (LINKTYPE_RAW, LINKTYPE_ETHERNET):
        raise ValueError(f"unsupported linktype {linktype}")
    with PcapWriter(os.fspath(path), linktype=linktype, sync=False) as writer:
        for when, src, dst, payload in datagrams:
            pkt = _udp_packet(src, dst, payload)
            if linktype == LINKTYPE_ETHERNET:
                pkt = Ether(src=_WRITE_SRC_MAC, dst=_WRITE_DST_MAC) / pkt
            pkt.time = when
            writer.write(pkt)
