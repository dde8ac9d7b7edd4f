"""A bounded flood of handshake initiations with a valid mac1 (so a responder must spend a
Diffie-Hellman on each until it goes under load and answers with cookie replies instead).

    python -m harness.flood HOST PORT SERVER_PUBLIC_KEY --seconds 20 --stats FILE [--pps N]

The initiations are made with wgref's core: random ephemeral/encrypted fields, mac1 from
``wgref.cookie.CookieMaker`` keyed with the responder's public key, no mac2. Statistics
({"sent", "cookie_replies", "seconds"}) are rewritten to FILE twice a second.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from types import FrameType

from wgref.cookie import CookieMaker

INITIATION_BODY = 116  # type .. encrypted timestamp (mac1 and mac2 follow)
COOKIE_REPLY = 3
MAX_RATE = 400_000


def initiations(server_public: bytes, count: int) -> list[bytes]:
    maker = CookieMaker.for_peer(server_public)
    out = []
    for _ in range(count):
        body = struct.pack("<I", 1) + os.urandom(INITIATION_BODY - 4)
        out.append(maker.add_macs(body, time.monotonic()))
    return out


def flood(host: str, port: int, server_public: bytes, seconds: float, stats: Path,
          pps: int) -> dict[str, float]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packets = initiations(server_public, 256)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect((host, port))
    sock.setblocking(False)
    sent = replies = 0
    started = time.monotonic()
    next_report = started
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    result: dict[str, float] = {}
    # Adaptive (pps == 0): start slow and double the rate every half second until the
    # responder answers with cookies, then hold that rate - enough to keep it under load
    # without drowning the legitimate client's handshake in a full queue.
    adaptive = pps == 0
    rate, ramp_at, window_start, window_sent, load_rate = 2000, started + 0.5, started, 0, 0
    while not stop:
        now = time.monotonic()
        if now - started >= seconds:
            break
        if adaptive:
            if replies and not load_rate:
                load_rate = rate
            if not load_rate and now >= ramp_at and rate < MAX_RATE:
                rate, ramp_at = min(rate * 2, MAX_RATE), now + 0.5
                window_start, window_sent = now, 0
        current = rate if adaptive else pps
        if current and window_sent > current * (now - window_start):
            time.sleep(0.0005)
        else:
            for packet in packets[:64]:
                try:
                    sock.send(packet)
                    sent += 1
                    window_sent += 1
                except (BlockingIOError, ConnectionRefusedError):
                    break
            packets = packets[64:] + packets[:64]
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            if data and data[0] == COOKIE_REPLY:
                replies += 1
        if now >= next_report:
            next_report = now + 0.5
            result = {"sent": sent, "cookie_replies": replies,
                      "seconds": round(now - started, 3), "pps": rate if adaptive else pps}
            stats.write_text(json.dumps(result))
    result = {"sent": sent, "cookie_replies": replies,
              "seconds": round(time.monotonic() - started, 3),
              "pps": rate if adaptive else pps, "done": 1}
    stats.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.flood")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("server_public_key")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pps", type=int, default=0,
                        help="packets per second (0: ramp up until cookie replies come)")
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args(argv)
    key = base64.b64decode(args.server_public_key)
    result = flood(args.host, args.port, key, min(args.seconds, 120.0), args.stats, args.pps)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
