"""The `wgref` command line: key tools, capture decryption, and `wgref IFNAME`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("wgref: not yet", args, file=sys.stderr)
    return 2
