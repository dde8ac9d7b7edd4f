"""Names, labels and subnets of the Docker backend (pure functions, no Docker needed).

Every container and network of a cell carries the cell's run prefix (``whXXXX``) in its name
and in the label ``org.wgref.harness.run``, so `python -m harness cleanup` finds them the way
it finds namespaces. Images carry ``org.wgref.harness.image``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from .. import naming

RUN_LABEL = "org.wgref.harness.run"  # the run prefix (whXXXX)
ROLE_LABEL = "org.wgref.harness.role"  # router / client / server / attacker ...
IMAGE_LABEL = "org.wgref.harness.image"  # on the images `harness images build` makes
BASE_LABEL = "org.wgref.harness.base"  # on a locally made debian:bookworm-slim
IMAGE_REPO = "wgref-harness"
IMAGE_TAG = "bookworm"

# Outer networks: /24s from the benchmarking range 198.18.0.0/15 (as the netns backend), host
# number i preferring 198.18.i.0/24; 198.19.77.0/24 is the tunnel's inner subnet and is never
# used. IPv6: 2001:db8:i::/64 (documentation), moved when taken.
V4_POOL = ipaddress.IPv4Network("198.18.0.0/15")
INNER_V4 = ipaddress.IPv4Network("198.19.77.0/24")
V6_POOL = ipaddress.IPv6Network("2001:db8::/32")
ROUTER_HOST_PART = 254  # the router's address on every link (.254 / ::fe)
GATEWAY_HOST_PART = 1  # docker's bridge address (the root namespace; hosts never route via it)

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def image_tag(name: str) -> str:
    return f"{IMAGE_REPO}/{name}:{IMAGE_TAG}"


def container_name(prefix: str, host: str) -> str:
    name = f"{prefix}-{host}"
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid container name {name!r}")
    return name


def network_name(prefix: str, index: int) -> str:
    return f"{prefix}-link{index}"


def run_labels(prefix: str, role: str | None = None) -> dict[str, str]:
    out = {RUN_LABEL: prefix}
    if role:
        out[ROLE_LABEL] = role
    return out


def prefix_of(labels: dict[str, str] | None, name: str = "") -> str | None:
    """The run prefix of a container or network: its label, else its name."""
    value = (labels or {}).get(RUN_LABEL)
    if value and naming.PREFIX_RE.match(value):
        return value[:6]
    if naming.is_harness_name(name):
        return name[:6]
    return None


def overlaps(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
             taken: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(net.version == other.version and net.overlaps(other) for other in taken)


def choose_subnets(count: int, taken: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
                   ) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]]:
    """``count`` (IPv4 /24, IPv6 /64) pairs that overlap nothing in ``taken`` (the host's
    routes and addresses, other Docker networks) nor the tunnel's inner subnet. Host i
    prefers 198.18.i.0/24 and 2001:db8:i::/64, like the netns backend."""
    v4_taken = [*taken, INNER_V4]
    chosen_v4: list[ipaddress.IPv4Network] = []
    chosen_v6: list[ipaddress.IPv6Network] = []
    candidates_v4 = list(V4_POOL.subnets(new_prefix=24))
    candidates_v6 = (ipaddress.ip_network(f"2001:db8:{i:x}::/64") for i in range(1, 0x10000))
    v6_iter = iter(candidates_v6)
    for index in range(1, count + 1):
        preferred = ipaddress.ip_network(f"198.18.{index}.0/24")
        order = [preferred, *candidates_v4[index:], *candidates_v4[1:index]]
        v4 = next((n for n in order if isinstance(n, ipaddress.IPv4Network)
                   and not overlaps(n, [*v4_taken, *chosen_v4])), None)
        if v4 is None:
            raise ValueError("no free /24 left in 198.18.0.0/15")
        preferred6 = ipaddress.ip_network(f"2001:db8:{index:x}::/64")
        v6: ipaddress.IPv6Network | None = None
        if isinstance(preferred6, ipaddress.IPv6Network) and not overlaps(
                preferred6, [*taken, *chosen_v6]):
            v6 = preferred6
        while v6 is None:
            cand = next(v6_iter)
            if isinstance(cand, ipaddress.IPv6Network) and not overlaps(
                    cand, [*taken, *chosen_v6]):
                v6 = cand
        chosen_v4.append(v4)
        chosen_v6.append(v6)
    return list(zip(chosen_v4, chosen_v6, strict=True))


def host_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network, part: int) -> str:
    return str(net.network_address + part)


def parse_networks(lines: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks named in `ip route`/`ip addr` output lines (first word, or after inet/inet6)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in lines:
        words = line.split()
        candidates = words[:1]
        for key in ("inet", "inet6"):
            if key in words and words.index(key) + 1 < len(words):
                candidates.append(words[words.index(key) + 1])
        for word in candidates:
            if word == "default":
                continue
            try:
                out.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return out
