"""The client's status socket: a UNIX socket that answers one JSON document per connection
(`wgref client --status` reads and prints it, like the seed's ``wireguard_stats``)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

STATUS_DIR = "/run/wgref"
TIMEOUT = 5.0


def socket_path(config_path: str) -> str:
    """``/run/wgref/client-NAME.sock`` for ``.../NAME.conf``."""
    name = os.path.splitext(os.path.basename(config_path))[0] or "client"
    return os.path.join(STATUS_DIR, f"client-{name}.sock")


def listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody answers
        else:
            raise OSError(f"{path} is in use: is another client running with this config?")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(8)
    listener.setblocking(False)
    return listener


def remove_stale(path: str) -> bool:
    """Remove ``path`` if it is a socket nobody answers on (a client killed with -9 left it);
    True when it was removed."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return False
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
            return True
        return False
    finally:
        probe.close()
    return False


def stale_candidates() -> list[str]:
    """The client status sockets in :data:`STATUS_DIR`."""
    try:
        names = sorted(os.listdir(STATUS_DIR))
    except OSError:
        return []
    return [os.path.join(STATUS_DIR, n) for n in names
            if n.startswith("client-") and n.endswith(".sock")]


def answer(listener: socket.socket, document: dict[str, Any]) -> None:
    """Answer every pending connection (non-blocking accept, bounded send)."""
    data = (json.dumps(document, indent=1) + "\n").encode()
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, OSError):
            return
        with contextlib.closing(conn):
            conn.settimeout(TIMEOUT)
            with contextlib.suppress(OSError):
                conn.sendall(data)


def query(path: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    document: dict[str, Any] = json.loads(b"".join(chunks))
    return document


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.2f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _render_peer(doc: dict[str, Any]) -> list[str]:
    age = doc.get("handshake_age")
    return [
        f"peer: {doc.get('peer')}",
        f"  endpoint: {doc.get('endpoint')}",
        f"  allowed ips: {', '.join(doc.get('allowed_ips', [])) or '(none)'}",
        "  latest handshake: "
        + ("(none)" if age is None else f"{age:.0f} seconds ago"),
        f"  transfer: {_bytes(int(doc.get('rx_bytes', 0)))} received, "
        f"{_bytes(int(doc.get('tx_bytes', 0)))} sent",
        f"  estimated loss: {100.0 * float(doc.get('estimated_loss', 0.0)):.2f}%",
        "  estimated rtt: "
        + ("(unknown)" if doc.get("rtt_ms") is None else f"{doc.get('rtt_ms')} ms"),
    ]


def render(doc: dict[str, Any]) -> str:
    """wg-show-like text: the client, then each peer."""
    lines = [
        f"client: {doc.get('config')}",
        f"  tunnel addresses: {', '.join(doc.get('addresses', []))}",
        f"  listening port: {doc.get('listen_port')}",
        f"  flows: {doc.get('flows_tunnel', 0)} tunnelled, {doc.get('flows_bypass', 0)} direct",
        f"  packets: {doc.get('queued', 0)} queued, "
        f"{doc.get('from_discard_device', 0)} read from the discard devices, "
        f"{doc.get('injected', 0)} injected",
    ]
    for peer in doc.get("peers") or [doc]:
        lines += ["", *_render_peer(peer)]
    return "\n".join(lines) + "\n"
