"""A deliberately sloppy server: wgref's interface with chosen defences switched off, so the
probes can be shown to fail a server that lacks them (a negative control; never a peer of
the interop matrix unless asked for by name).

    python -m harness.probes.sloppy --break replay,timestamp -f IFNAME
    python -m harness probe --server wgref-sloppy      (every defence below is off)

Defences (the probes that must fail without them):
  replay     transport replay window        (transport-replay, counter-behind-window,
                                              roaming-spoof)
  timestamp  initiation TAI64N and 50/s     (initiation-replay, initiation-old-timestamp,
                                              initiation-rate-limit)
  mac1       mac1 check                      (bad-mac1)
  low-order  all-zero DH rejection           (low-order-ephemeral)
  reserved   reserved header bytes           (reserved-initiation, reserved-transport)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..peers.uapi import UapiDriver
from ..traffic import harness_python

BREAKS = ("replay", "timestamp", "mac1", "low-order", "reserved")


def _break_replay() -> None:
    from wgref.replay import ReplayWindow

    def accept(self: ReplayWindow, counter: int, limit: int = 1 << 64) -> bool:
        return 0 <= counter < limit

    ReplayWindow.check_and_update = accept  # type: ignore[method-assign]


def _break_timestamp() -> None:
    from wgref.handshake import Handshake, HandshakeState
    from wgref.noise import OpenedInitiation

    def consume(self: Handshake, opened: OpenedInitiation, sender: int, now: float) -> None:
        self.latest_timestamp = opened.timestamp
        self.last_initiation_consumption = now
        self.state = HandshakeState.CONSUMED_INITIATION
        self.symmetric = opened.state
        self.remote_ephemeral = opened.initiator_ephemeral
        self.remote_index = sender

    Handshake.consume_initiation = consume  # type: ignore[method-assign]


def _break_mac1() -> None:
    from wgref.cookie import CookieChecker

    def anything(self: CookieChecker, message: bytes) -> bool:
        return True

    CookieChecker.check_mac1 = anything  # type: ignore[method-assign]


def _break_low_order() -> None:
    from wgref import device, noise
    from wgref.crypto import dh as strict
    from wgref.errors import ProtocolError

    def lenient(private_key: bytes, peer_public: bytes) -> bytes:
        try:
            return strict(private_key, peer_public)
        except ProtocolError:
            return bytes(32)

    device.dh = lenient  # type: ignore[attr-defined]
    noise.dh = lenient  # type: ignore[attr-defined]


def _break_reserved() -> None:
    from wgref import device, messages

    strict: Callable[[bytes], int] = messages.message_type

    def lenient(data: bytes) -> int:
        return strict(data[:1] + b"\x00\x00\x00" + data[4:] if len(data) >= 4 else data)

    device.message_type = lenient  # type: ignore[attr-defined]
    messages.message_type = lenient


PATCHES: dict[str, Callable[[], None]] = {
    "replay": _break_replay, "timestamp": _break_timestamp, "mac1": _break_mac1,
    "low-order": _break_low_order, "reserved": _break_reserved,
}


def sloppy_driver(breaks: tuple[str, ...] = BREAKS, name: str = "wgref-sloppy") -> UapiDriver:
    unknown = set(breaks) - set(BREAKS)
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)} (known: {', '.join(BREAKS)})")

    def command() -> list[str] | None:
        return harness_python("harness.probes.sloppy", "--break", ",".join(breaks))

    driver = UapiDriver(name, command)
    driver.limitations = {"keylog": "a negative control"}
    return driver


def main(argv: list[str]) -> int:
    args = list(argv)
    breaks: list[str] = []
    while len(args) >= 2 and args[0] == "--break":
        breaks += [b for b in args[1].split(",") if b]
        args = args[2:]
    for name in breaks:
        PATCHES[name]()
    print(f"wgref-sloppy: defences off: {', '.join(breaks) or 'none'}", flush=True)
    from wgref.interface import main as interface_main

    return interface_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
