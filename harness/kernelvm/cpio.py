"""A minimal writer for the ``newc`` cpio format that the kernel unpacks as an initramfs (no
cpio program needed, and the archive is the same for the same inputs)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # without a leading slash
    mode: int  # file type and permission bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(out: BinaryIO, length: int) -> None:
    out.write(b"\0" * (-length % 4))


def write(out: BinaryIO, entries: list[Entry]) -> None:
    """Write the archive: parents must come before their children."""
    for ino, entry in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = [
            ino, entry.mode, 0, 0, 1 if not stat.S_ISDIR(entry.mode) else 2, 0,
            len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
        ]
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        out.write(header + name)
        _pad(out, len(header) + len(name))
        out.write(entry.data)
        _pad(out, len(entry.data))
