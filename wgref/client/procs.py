"""Which process owns a flow: /proc/net/{tcp,udp,icmp,raw}{,6} give the socket inode of the
flow's local end, /proc/PID/fd the processes holding it, /proc/PID/{exe,comm} their names.

The application matching rule (see README.md, "Which applications match"):

* an entry containing ``/`` is a path, compared case-sensitively with the executable
  (``/proc/PID/exe``); an entry ending in ``/`` matches every executable below that directory;
* any other entry is a name, compared case-insensitively with the executable's file name and
  with the process name (``/proc/PID/comm``: a script started through its ``#!`` line has the
  script's name there); a trailing ``.exe`` in the entry is ignored (Windows configs), and
  since the kernel cuts ``comm`` to 15 characters a longer entry matches ``comm`` by its first
  15 characters.
* A flow matches when any process holding its socket matches.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .packet import ICMP, ICMPV6, TCP, UDP

PROC = "/proc"
COMM_LEN = 15


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    name: str  # /proc/PID/comm
    exe: str  # /proc/PID/exe ('' when unreadable)

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}]"


def _hex_address(text: str) -> bytes:
    """A /proc/net address (host-order 32-bit words in hex) as network-order bytes."""
    raw = bytes.fromhex(text)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


_V4_MAPPED = bytes(10) + b"\xff\xff"


def _tables(proto: int, version: int) -> list[tuple[str, bool]]:
    """(path, is_v6_table) to search; IPv4 flows may belong to dual-stack IPv6 sockets."""
    name = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmp"}.get(proto)
    out: list[tuple[str, bool]] = []
    if name is not None:
        out = [(f"{PROC}/net/{name}", False), (f"{PROC}/net/{name}6", True)]
        if version == 6:
            out = out[1:]
    if proto not in (TCP, UDP):  # ICMP's "ping" sockets above, and raw sockets
        out.append((f"{PROC}/net/raw6" if version == 6 else f"{PROC}/net/raw", version == 6))
    return out


def socket_inodes(
    proto: int, version: int, local: bytes, lport: int, remote: bytes, rport: int
) -> list[int]:
    """Inodes of the sockets that may own the flow, best match first."""
    scored: list[tuple[int, int]] = []
    for path, is_v6 in _tables(proto, version):
        want_local = _V4_MAPPED + local if (is_v6 and version == 4) else local
        want_remote = _V4_MAPPED + remote if (is_v6 and version == 4) else remote
        zero = bytes(len(want_local))
        raw = path.rsplit("/", 1)[1].startswith("raw")
        try:
            with open(path) as table:
                lines = table.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            try:
                laddr, lp = fields[1].split(":")
                raddr, rp = fields[2].split(":")
                l_ip, r_ip = _hex_address(laddr), _hex_address(raddr)
                l_port, r_port, inode = int(lp, 16), int(rp, 16), int(fields[9])
            except ValueError:
                continue
            if inode == 0:
                continue
            if raw:  # raw sockets: the "port" is the protocol
                if l_port == proto and l_ip in (want_local, zero):
                    scored.append((3, inode))
                continue
            if l_port != lport or l_ip not in (want_local, zero):
                continue
            if proto in (TCP, UDP) and r_port not in (rport, 0):
                continue
            if r_ip not in (want_remote, zero):
                continue
            score = (l_ip == want_local) + (r_ip == want_remote) + (r_port == rport != 0)
            scored.append((-score, inode))
    scored.sort()
    return [inode for _score, inode in scored]


def owners(inodes: Sequence[int], proc: str = PROC) -> list[Process]:
    """The processes holding any of ``inodes`` (in the order of ``inodes``)."""
    wanted = {f"socket:[{inode}]": i for i, inode in enumerate(inodes)}
    found: list[tuple[int, Process]] = []
    seen: set[int] = set()
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            rank = wanted.get(target)
            if rank is not None and pid not in seen:
                seen.add(pid)
                found.append((rank, describe(pid, proc)))
    found.sort(key=lambda item: item[0])
    return [p for _rank, p in found]


def describe(pid: int, proc: str = PROC) -> Process:
    try:
        with open(f"{proc}/{pid}/comm") as f:
            name = f.read().strip()
    except OSError:
        name = ""
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        exe = ""
    if exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    return Process(pid, name, exe)


def _name_key(entry: str) -> str:
    key = entry.casefold()
    return key[:-4] if key.endswith(".exe") else key


def app_matches(entry: str, process: Process) -> bool:
    """The matching rule of the module docstring, for one config entry."""
    entry = entry.strip()
    if not entry:
        return False
    if "/" in entry:
        if not process.exe:
            return False
        if entry.endswith("/"):
            return process.exe.startswith(entry)
        return process.exe == entry
    key = _name_key(entry)
    names = {_name_key(os.path.basename(process.exe))} if process.exe else set()
    comm = process.name.casefold()
    return key in names or key == comm or (len(key) > COMM_LEN and key[:COMM_LEN] == comm)


def any_matches(entries: Iterable[str], processes: Iterable[Process]) -> bool:
    entries = list(entries)
    return any(app_matches(e, p) for p in processes for e in entries)


def address_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))
