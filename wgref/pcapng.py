"""Write pcapng files: frames with exact timestamps and comments, and Decryption Secrets Blocks.

Block layouts from the pcapng specification (IETF draft-ietf-opsawg-pcapng): every block is
type, total length, body padded to 4 bytes, options, total length again. scapy's
RawPcapNgWriter writes comments but takes float timestamps at microsecond resolution and has no
Decryption Secrets Block, so the few blocks needed here are written directly.

The file is created with mode 0600: both kinds of file written here carry secrets (a key log,
or decrypted traffic).
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import BinaryIO, Final

__all__ = ["PcapNgWriter"]

_SHB: Final = 0x0A0D0D0A
_IDB: Final = 1
_EPB: Final = 6
_DSB: Final = 10
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_OPT_END: Final = 0
_OPT_COMMENT: Final = 1
_IF_TSRESOL: Final = 9
_NANOSECONDS: Final = 9  # if_tsresol value: 10^-9 s


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(options: list[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    out = b"".join(struct.pack("<HH", code, len(value)) + _pad(value) for code, value in options)
    return out + struct.pack("<HH", _OPT_END, 0)


def _block(kind: int, body: bytes, options: list[tuple[int, bytes]] | None = None) -> bytes:
    body = _pad(body) + _options(options or [])
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapNgWriter:
    """One section, little-endian; interfaces are added per link type as frames need them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._interfaces: dict[int, int] = {}  # link type -> interface id
        self._file.write(_block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)))

    def secrets(self, secrets_type: int, data: bytes) -> None:
        """A Decryption Secrets Block (for the frames written after it)."""
        self._file.write(_block(_DSB, struct.pack("<II", secrets_type, len(data)) + data))

    def _interface(self, linktype: int) -> int:
        ifid = self._interfaces.get(linktype)
        if ifid is None:
            ifid = self._interfaces[linktype] = len(self._interfaces)
            options = [(_IF_TSRESOL, bytes([_NANOSECONDS]))]
            self._file.write(_block(_IDB, struct.pack("<HHI", linktype, 0, 0), options))
        return ifid

    def frame(
        self,
        linktype: int,
        time_ns: int,
        data: bytes,
        comment: str | None = None,
        wirelen: int | None = None,
    ) -> None:
        """An Enhanced Packet Block: the frame as captured, its timestamp, an optional comment
        and its length on the wire (when the capture cut it short)."""
        ifid = self._interface(linktype)
        original = max(wirelen or 0, len(data))
        header = struct.pack(
            "<IIIII", ifid, time_ns >> 32, time_ns & 0xFFFFFFFF, len(data), original
        )
        options = [(_OPT_COMMENT, comment.encode("utf-8"))] if comment else []
        self._file.write(_block(_EPB, header + data, options))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapNgWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
