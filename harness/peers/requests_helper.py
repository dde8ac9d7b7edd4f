"""One TCP or UDP echo check through a fresh wireguard-requests tunnel; prints harness.echo's
JSON result line.

    python -m harness.peers.requests_helper SPEC.json tcp|udp HOST PORT [--size N] ...
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from typing import Any


def _watchdog(seconds: float, started: float) -> None:
    """The wheel can block inside native code (no handshake): report and exit on time."""
    time.sleep(seconds)
    result = {"ok": False, "sent": 0, "received": 0,
              "seconds": round(time.monotonic() - started, 3),
              "error": f"no answer through the tunnel within {seconds:g} s"}
    print(json.dumps(result), flush=True)
    os._exit(1)


def _check(tunnel: Any, args: argparse.Namespace) -> tuple[int, int, str | None]:
    if args.proto == "tcp":
        payload = os.urandom(args.size)
        stream = tunnel.create_stream(args.host, args.port)
        stream.set_timeout(args.timeout)
        stream.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = stream.recv(65536)
            if not chunk:
                break
            got += chunk
        stream.close()
        return len(payload), len(got), None if got == payload else "echo differs"
    sock = tunnel.create_udp_socket(0)
    sock.set_timeout(max(0.5, args.timeout / (args.count * 2)))
    good = 0
    for seq in range(args.count):
        payload = seq.to_bytes(4, "big") + os.urandom(max(0, args.size - 4))
        for _ in range(2):
            try:
                sock.send_to(payload, (args.host, args.port))
                data, _ = sock.recv_from(65535)
            except Exception:  # the wheel raises its own timeout types
                continue
            if data == payload:
                good += 1
                break
    sock.close()
    error = None if good == args.count else f"{good}/{args.count} datagrams echoed"
    return args.count * args.size, good * args.size, error


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("proto", choices=["tcp", "udp"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    with open(args.spec) as fh:
        spec = json.load(fh)
    native: Any = importlib.import_module("wireguard_requests._native")
    peer = spec["peer"]
    started = time.monotonic()
    threading.Thread(target=_watchdog, args=(args.timeout, started), daemon=True).start()
    error: str | None
    try:
        config = native.WgConfig(
            spec["private_key"], spec["address"],
            [native.WgPeer(peer["public_key"], peer["endpoint"], peer["allowed_ips"], None,
                           peer["preshared_key"])],
            prefix_len=spec["prefix_len"], mtu=spec["mtu"],
        )
        tunnel = native.WgTunnel(config)
        try:
            sent, received, error = _check(tunnel, args)
        finally:
            tunnel.close()
    except Exception as exc:  # report any failure of the wheel as a result line
        sent, received, error = 0, 0, f"{type(exc).__name__}: {exc}"
    result = {"ok": error is None, "sent": sent, "received": received,
              "seconds": round(time.monotonic() - started, 3), "error": error}
    print(json.dumps(result), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
