"""Remove what killed runs left behind: namespaces, UAPI sockets, processes, nftables tables
and owner files carrying a harness prefix. Prefixes whose owning run is still alive are left
alone unless ``force``."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import naming, registry_files
from .shell import run
from .topology import remove_namespace


@dataclass
class Leftovers:
    namespaces: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    processes: list[tuple[int, str]] = field(default_factory=list)
    nft_tables: list[str] = field(default_factory=list)
    owner_files: list[str] = field(default_factory=list)
    docker: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, prefix)

    def empty(self) -> bool:
        return not (self.namespaces or self.sockets or self.processes or self.nft_tables
                    or self.owner_files or self.docker)

    def lines(self) -> list[str]:
        out = [f"namespace {n}" for n in self.namespaces]
        out += [f"socket {s}" for s in self.sockets]
        out += [f"process {pid}: {cmd[:100]}" for pid, cmd in self.processes]
        out += [f"nft table {t}" for t in self.nft_tables]
        out += [f"owner file {o}" for o in self.owner_files]
        out += [f"docker {kind} {name}" for kind, name, _ in self.docker]
        return out


def _prefix_of(name: str) -> str:
    return name[:6]


def _ours(name: str, prefix: str | None, force: bool) -> bool:
    if not naming.is_harness_name(name, prefix):
        return False
    return force or not registry_files.owner_alive(_prefix_of(name))


def _own_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _processes(prefix: str | None, force: bool) -> list[tuple[int, str]]:
    skip = _own_ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv if w]
        # a process belongs to a run if an argument *is* a harness name (netns, ifname, path)
        hits = [w for w in words
                if any(_ours(part, prefix, force) for part in
                       (w, Path(w).name, Path(w).stem))]
        if hits:
            found.append((int(entry.name), " ".join(words)))
    return found


def find(prefix: str | None = None, force: bool = False) -> Leftovers:
    left = Leftovers()
    result = run(["ip", "netns", "list"], check=False, timeout=10)
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if _ours(name, prefix, force):
            left.namespaces.append(name)
    sock_dir = Path(naming.WG_SOCKET_DIR)
    if sock_dir.is_dir():
        left.sockets = sorted(str(p) for p in sock_dir.glob("*.sock")
                              if _ours(p.name, prefix, force))
    left.processes = _processes(prefix, force)
    tables = run(["nft", "list", "tables"], check=False, timeout=10)
    for line in tables.stdout.splitlines():
        parts = line.split()  # "table inet NAME"
        if len(parts) == 3 and _ours(parts[2], prefix, force):
            left.nft_tables.append(f"{parts[1]} {parts[2]}")
    left.owner_files = [p for p in registry_files.owned_prefixes()
                        if _ours(p, prefix, force)]
    from .docker import cleanup as docker_cleanup

    left.docker = docker_cleanup.find(lambda p: _ours(p, prefix, force))
    return left


def cleanup(prefix: str | None = None, force: bool = False) -> Leftovers:
    """Remove leftovers; returns what was found (and removed)."""
    left = find(prefix, force)
    for pid, _ in left.processes:
        _kill(pid)
    if left.docker:  # before the namespaces: removing a container ends what runs in it
        from .docker import cleanup as docker_cleanup

        docker_cleanup.remove(left.docker)
    for ns in left.namespaces:
        remove_namespace(ns)
    for sock in left.sockets:
        Path(sock).unlink(missing_ok=True)
    for table in left.nft_tables:
        family, name = table.split()
        run(["nft", "delete", "table", family, name], check=False, timeout=10)
    for prefix_name in left.owner_files:
        registry_files.release(prefix_name)
    return left


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
