"""Just enough ELF64 (little-endian) reading for the kernel-VM build: a section's bytes (a
module's ``.modinfo``), whether a program has an interpreter, and whether a kernel image has a
PVH entry note (so QEMU can boot the uncompressed ``vmlinux`` directly)."""

from __future__ import annotations

import struct
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
PT_INTERP = 3
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


class ElfError(ValueError):
    """Not an ELF64 little-endian file, or a truncated one."""


def _header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx)."""
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    return phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx


def section(data: bytes, name: str) -> bytes | None:
    """The contents of the named section, or None when there is none."""
    _, shoff, _, _, shentsize, shnum, shstrndx = _header(data)
    if shoff == 0 or shnum == 0 or shstrndx >= shnum:
        return None

    def entry(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        if base + 64 > len(data):
            raise ElfError("truncated section header table")
        sh_name = struct.unpack_from("<I", data, base)[0]
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return sh_name, offset, size

    _, str_off, str_size = entry(shstrndx)
    names = data[str_off:str_off + str_size]
    wanted = name.encode()
    for index in range(shnum):
        sh_name, offset, size = entry(index)
        end = names.find(b"\0", sh_name)
        if names[sh_name:end] == wanted:
            return data[offset:offset + size]
    return None


def modinfo(path: Path) -> dict[str, list[str]]:
    """A kernel module's ``.modinfo`` strings (``depends``, ``vermagic``, ...)."""
    raw = section(path.read_bytes(), ".modinfo")
    if raw is None:
        raise ElfError(f"{path} has no .modinfo section")
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_depends(path: Path) -> list[str]:
    """The module names in ``depends=`` (what `modinfo -F depends` prints)."""
    values = modinfo(path).get("depends", [])
    return [dep for value in values for dep in value.split(",") if dep]


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(type, offset, filesz) of each program header."""
    phoff, _, phentsize, phnum, _, _, _ = _header(data)
    out = []
    for index in range(phnum):
        base = phoff + index * phentsize
        if base + 56 > len(data):
            raise ElfError("truncated program header table")
        p_type = struct.unpack_from("<I", data, base)[0]
        offset = struct.unpack_from("<Q", data, base + 0x08)[0]
        filesz = struct.unpack_from("<Q", data, base + 0x20)[0]
        out.append((p_type, offset, filesz))
    return out


def has_interpreter(data: bytes) -> bool:
    """True for a dynamically linked program (it names a loader in PT_INTERP)."""
    return any(p_type == PT_INTERP for p_type, _, _ in _segments(data))


def notes(data: bytes) -> list[tuple[str, int, bytes]]:
    """(owner, type, description) of every note in the PT_NOTE segments."""
    out = []
    for p_type, offset, filesz in _segments(data):
        if p_type != PT_NOTE:
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", data, pos)
            pos += 12
            owner = data[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
            pos += (namesz + 3) & ~3
            desc = data[pos:pos + descsz]
            pos += (descsz + 3) & ~3
            out.append((owner, n_type, desc))
    return out


def has_pvh_entry(data: bytes) -> bool:
    """True when the image carries XEN_ELFNOTE_PHYS32_ENTRY (QEMU boots it via PVH)."""
    return any(owner == "Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY
               for owner, n_type, _ in notes(data))
