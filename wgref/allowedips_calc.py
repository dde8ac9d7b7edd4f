"""`wgref allowed-ips`: the AllowedIPs list equal to allowed minus disallowed prefixes.

For WireGuard clients without DisallowedIPs::

    wgref allowed-ips --allowed 0.0.0.0/0,::/0 --disallowed 192.168.0.0/16,10.0.0.0/8

prints the smallest list of prefixes covering exactly the allowed addresses that are not
disallowed (IPv4 first, then IPv6, each sorted).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterable
from typing import Any, cast

__all__ = ["main", "parse_prefixes", "subtract"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefixes(text: str) -> list[Network]:
    """Comma- or space-separated prefixes; a bare address is a host prefix; host bits are
    cleared (as `wg` does). Raises ValueError naming the bad item."""
    out: list[Network] = []
    for item in text.replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"bad prefix {item!r}") from None
    return out


def _collapse(networks: Iterable[Network]) -> list[Network]:
    collapsed: Iterable[Any] = ipaddress.collapse_addresses(cast(Any, list(networks)))
    return sorted(collapsed)


def _subtract_family(allowed: list[Network], disallowed: list[Network]) -> list[Network]:
    current = _collapse(allowed)
    for hole in _collapse(disallowed):
        remaining: list[Network] = []
        for network in current:
            if cast(Any, hole).subnet_of(network):
                remaining.extend(cast(Any, network).address_exclude(hole))
            elif not cast(Any, network).subnet_of(hole):
                remaining.append(network)
        current = remaining
    return _collapse(current)


def subtract(allowed: Iterable[Network], disallowed: Iterable[Network]) -> list[Network]:
    """Prefixes covering exactly (allowed − disallowed), collapsed, IPv4 before IPv6."""
    allowed, disallowed = list(allowed), list(disallowed)
    out: list[Network] = []
    for version in (4, 6):
        out += _subtract_family(
            [n for n in allowed if n.version == version],
            [n for n in disallowed if n.version == version],
        )
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wgref allowed-ips",
        description="Print the AllowedIPs equal to the allowed prefixes minus the disallowed.",
    )
    parser.add_argument("--allowed", action="append", default=[], metavar="PREFIXES",
                        help="comma-separated prefixes (repeatable); default 0.0.0.0/0,::/0")
    parser.add_argument("--disallowed", action="append", default=[], metavar="PREFIXES",
                        help="comma-separated prefixes to leave out (repeatable)")
    parser.add_argument("--line", action="store_true",
                        help="print as a config line: AllowedIPs = ...")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        allowed = parse_prefixes(",".join(args.allowed or ["0.0.0.0/0,::/0"]))
        disallowed = parse_prefixes(",".join(args.disallowed))
    except ValueError as exc:
        sys.stderr.write(f"wgref allowed-ips: {exc}\n")
        return 2
    text = ", ".join(str(n) for n in subtract(allowed, disallowed))
    sys.stdout.write(f"AllowedIPs = {text}\n" if args.line else f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
