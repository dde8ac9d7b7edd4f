"""The probes' helpers inside a host namespace (bounded in time and count).

    python -m harness.probes.listener listen --port 7001 --out FILE [--seconds 300]
    python -m harness.probes.listener send HOST PORT [--interval 1] [--seconds 140]

``listen`` records every UDP datagram that reaches the port (on any address: only the tunnel
routes to it) as a JSON line ``{"t", "src", "sport", "size", "payload"}``; this is how a
probe learns whether the server delivered a packet. ``send`` sends one small datagram per
interval (traffic that makes the server send, for the rekey probe).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

MAX_RECORDS = 100_000


def listen(port: int, out: Path, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    end = time.monotonic() + seconds
    count = 0
    with out.open("a") as fh:
        print(f"listening on udp {port}", flush=True)
        while count < MAX_RECORDS and (left := end - time.monotonic()) > 0:
            sock.settimeout(min(left, 1.0))
            try:
                data, (host, sport) = sock.recvfrom(65535)
            except TimeoutError:
                continue
            count += 1
            fh.write(json.dumps({"t": time.time(), "src": host, "sport": sport,
                                 "size": len(data), "payload": data[:64].hex()}) + "\n")
            fh.flush()
    return 0


def send(host: str, port: int, interval: float, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.monotonic() + seconds
    sequence = 0
    while time.monotonic() < end:
        try:
            sock.sendto(f"probe traffic {sequence}".encode(), (host, port))
        except OSError as exc:  # no route yet, or ICMP errors: keep the rhythm
            print(f"send {sequence}: {exc}", flush=True)
        sequence += 1
        time.sleep(interval)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.probes.listener")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_listen = sub.add_parser("listen")
    p_listen.add_argument("--port", type=int, required=True)
    p_listen.add_argument("--out", type=Path, required=True)
    p_listen.add_argument("--seconds", type=float, default=300.0)
    p_send = sub.add_parser("send")
    p_send.add_argument("host")
    p_send.add_argument("port", type=int)
    p_send.add_argument("--interval", type=float, default=1.0)
    p_send.add_argument("--seconds", type=float, default=140.0)
    args = parser.parse_args(argv)
    if args.cmd == "listen":
        return listen(args.port, args.out, min(args.seconds, 900.0))
    return send(args.host, args.port, max(args.interval, 0.05), min(args.seconds, 300.0))


if __name__ == "__main__":
    sys.exit(main())
