"""TCP/UDP echo server and checking clients, run inside host namespaces.

    python -m harness.echo serve --port 7000 [--seconds 600]
    python -m harness.echo tcp HOST PORT [--bytes N] [--timeout T]
    python -m harness.echo udp HOST PORT [--count N] [--size S] [--timeout T]

The clients print one JSON object ({"ok", "sent", "received", "seconds", "error"}) and exit 0
only when every byte came back intact. (ncat 7.93's `-e /bin/cat` echo loses data on a
half-close and its UDP client exits before the reply, so the harness uses this instead.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any


def _serve_tcp(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(60)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(port: int, seconds: float) -> int:
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.bind(("::", port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", port))

    def udp_loop() -> None:
        while True:
            data, addr = udp.recvfrom(65535)
            udp.sendto(data, addr)

    def tcp_loop() -> None:
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=_serve_tcp, args=(conn,), daemon=True).start()

    for loop in (udp_loop, tcp_loop):
        threading.Thread(target=loop, daemon=True).start()
    print(f"echo: serving TCP and UDP on port {port}", flush=True)
    time.sleep(seconds)
    return 0


def tcp_check(host: str, port: int, size: int, timeout: float) -> dict[str, Any]:
    payload = os.urandom(size)
    started = time.monotonic()
    received = bytearray()
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(max(0.1, timeout - (time.monotonic() - started)))

            def sender() -> None:
                try:
                    conn.sendall(payload)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            thread = threading.Thread(target=sender, daemon=True)
            thread.start()
            while chunk := conn.recv(65536):
                received += chunk
                if time.monotonic() - started > timeout:
                    raise TimeoutError("timed out")
    except OSError as exc:
        return _result(False, size, len(received), started, f"{type(exc).__name__}: {exc}")
    ok = bytes(received) == payload
    return _result(ok, size, len(received), started, None if ok else "echo differs")


def udp_check(host: str, port: int, count: int, size: int, timeout: float) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    started = time.monotonic()
    good = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for seq in range(count):
            payload = seq.to_bytes(4, "big") + os.urandom(max(0, size - 4))
            per_try = max(0.2, timeout / (count * 3))
            for _ in range(3):  # UDP may be lost while a handshake completes
                if time.monotonic() - started > timeout:
                    break
                try:
                    sock.sendto(payload, (host, port))
                    sock.settimeout(per_try)
                    while True:
                        data, _ = sock.recvfrom(65535)
                        if data == payload:
                            good += 1
                            break
                    break
                except OSError:
                    continue
    ok = good == count
    error = None if ok else f"{good}/{count} datagrams echoed"
    return _result(ok, count * size, good * size, started, error)


def _result(ok: bool, sent: int, received: int, started: float,
            error: str | None) -> dict[str, Any]:
    return {"ok": ok, "sent": sent, "received": received,
            "seconds": round(time.monotonic() - started, 3), "error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.echo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--seconds", type=float, default=900.0)
    for name in ("tcp", "udp"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "tcp":
            p.add_argument("--bytes", type=int, default=65536)
        else:
            p.add_argument("--count", type=int, default=3)
            p.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.port, args.seconds)
    if args.cmd == "tcp":
        result = tcp_check(args.host, args.port, args.bytes, args.timeout)
    else:
        result = udp_check(args.host, args.port, args.count, args.size, args.timeout)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
