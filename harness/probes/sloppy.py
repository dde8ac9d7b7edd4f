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

from wgref.checks import Checks

from ..peers.base import PeerDriver
from ..peers.spec import negative_control
from ..traffic import harness_python

# The defences the probes test (wgref-sloppy turns these off); any name of
# wgref.checks.Checks.names() may be given to --break.
BREAKS = ("replay", "timestamp", "mac1", "low-order", "reserved")


def sloppy_driver(breaks: tuple[str, ...] = BREAKS, name: str = "wgref-sloppy") -> PeerDriver:
    Checks.without(*breaks)  # ValueError for an unknown name

    def command() -> list[str] | None:
        return harness_python("harness.probes.sloppy", "--break", ",".join(breaks))

    return negative_control(name, command).driver()


def main(argv: list[str]) -> int:
    args = list(argv)
    breaks: list[str] = []
    while len(args) >= 2 and args[0] == "--break":
        breaks += [b for b in args[1].split(",") if b]
        args = args[2:]
    try:
        checks = Checks.without(*breaks)
    except ValueError as exc:
        sys.stderr.write(f"wgref-sloppy: --break: {exc}\n")
        return 2
    print(f"wgref-sloppy: defences off: {', '.join(breaks) or 'none'}", flush=True)
    from wgref.interface import main as interface_main

    return interface_main(args, checks=checks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
