"""Sockets inside a network namespace without a subprocess: switch this thread into the
namespace (setns), create the socket, switch back. A socket keeps the namespace it was
created in, so the probe engine runs in the harness's own process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """The namespace could not be entered (or, worse, left)."""


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns into {what}: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``ns`` (the named `ip netns` one)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        except OSError as exc:
            raise NetnsError(f"no namespace {ns}: {exc}") from exc
        try:
            _setns(target, ns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the harness's own namespace")
    finally:
        os.close(own)


def udp_socket(ns: str, address: str, port: int = 0) -> socket.socket:
    """A UDP socket bound to ``address:port`` inside ``ns`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with inside(ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError:
            sock.close()
            raise
    return sock
