"""`wgref allowed-ips`: allowed minus disallowed, checked against brute force."""

from __future__ import annotations

import ipaddress
import random
from typing import Any, cast

import pytest

from wgref.allowedips_calc import main, parse_prefixes, subtract

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _random_prefix(rng: random.Random, version: int, bits: int) -> Network:
    """A prefix inside a small space (the low ``bits`` bits vary) so sets can be enumerated."""
    width = 32 if version == 4 else 128
    base = 0x0A000000 if version == 4 else 0xFD00 << 112
    length = rng.randint(width - bits, width)
    address = base | rng.getrandbits(bits)
    return ipaddress.ip_network((address, length), strict=False)


def _addresses(networks: list[Network], version: int) -> set[int]:
    out: set[int] = set()
    for n in networks:
        if n.version == version:
            out.update(range(int(n.network_address), int(n.broadcast_address) + 1))
    return out


@pytest.mark.parametrize("seed", range(200))
def test_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    allowed = [_random_prefix(rng, rng.choice((4, 6)), 10) for _ in range(rng.randint(0, 5))]
    disallowed = [_random_prefix(rng, rng.choice((4, 6)), 10) for _ in range(rng.randint(0, 6))]
    result = subtract(allowed, disallowed)
    for version in (4, 6):
        expected = _addresses(allowed, version) - _addresses(disallowed, version)
        assert _addresses(result, version) == expected
    # minimal and canonical: no overlaps, nothing mergeable
    for version in (4, 6):
        family = [n for n in result if n.version == version]
        assert family == sorted(ipaddress.collapse_addresses(cast(Any, family)))


def test_everything_but_private_ranges() -> None:
    result = subtract(parse_prefixes("0.0.0.0/0,::/0"),
                      parse_prefixes("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"))
    v4 = [n for n in result if n.version == 4]
    assert ipaddress.ip_network("11.0.0.0/8") in v4
    assert not any(n.overlaps(ipaddress.ip_network("10.0.0.0/8")) for n in v4)
    assert ipaddress.ip_network("::/1") in result


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--allowed", "10.0.0.0/8", "--disallowed", "10.0.0.0/9"]) == 0
    assert capsys.readouterr().out == "10.128.0.0/9\n"
    assert main(["--allowed", "10.0.0.0/24", "--disallowed", "10.0.0.0/25", "--line"]) == 0
    assert capsys.readouterr().out == "AllowedIPs = 10.0.0.128/25\n"
    assert main(["--allowed", "10.0.0.0/33"]) == 2
    assert "bad prefix '10.0.0.0/33'" in capsys.readouterr().err
    assert main(["--allowed", "10.0.0.0/8", "--disallowed", "10.0.0.0/8"]) == 0
    assert capsys.readouterr().out == "\n"
