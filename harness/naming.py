"""Run-specific names: every namespace, interface and UAPI socket of a run carries its prefix.

A prefix is ``wh`` plus four hex digits (``wh1a2b``). Namespaces are ``PREFIX-HOST``; interface
names are ``PREFIX`` + a short suffix and stay within Linux's 15-character limit; UAPI sockets
live in the global ``/var/run/wireguard`` as ``IFNAME.sock``, so they carry the prefix too.
"""

from __future__ import annotations

import re
import secrets
import threading

ROOT = "wh"
PREFIX_RE = re.compile(r"^wh[0-9a-f]{4}")
IFNAMSIZ = 15  # usable characters of a Linux interface name
WG_SOCKET_DIR = "/var/run/wireguard"


_issued: set[str] = set()
_issued_lock = threading.Lock()


def new_prefix() -> str:
    """A run prefix no other cell of this process has (cells may run at once, --jobs)."""
    with _issued_lock:
        while True:
            prefix = f"{ROOT}{secrets.token_hex(2)}"
            if prefix not in _issued:
                _issued.add(prefix)
                return prefix


def namespace(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def ifname(prefix: str, suffix: str) -> str:
    name = f"{prefix}{suffix}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def is_harness_name(name: str, prefix: str | None = None) -> bool:
    """True for names made by a harness run (of ``prefix``, or of any run when None)."""
    if prefix is not None:
        return name.startswith(prefix)
    return PREFIX_RE.match(name) is not None
