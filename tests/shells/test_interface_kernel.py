"""`wgref IFNAME` behaves like the kernel's WireGuard on the wire (drivers/net/wireguard
socket.c, send.c, device.c; the scenarios of the kernel's netns.sh), against Debian's
wireguard-go as the peer: sticky source addresses, routing loops, ICMP errors.

Topology: wgref in ns1 and wireguard-go in ns2, each with its UDP sockets and tunnel link in
its own namespace, joined by a veth pair (10.0.0.1/24, fd00:aa::1/96 -- 10.0.0.2/24,
fd00:aa::2/96); tunnel addresses 192.168.241.1/24, fd00::1/112 and .2, ::2.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import (
    Lab,
    Pair,
    assert_no_leftovers,
    genkey,
    pubkey,
    require_netns,
    wait_for,
)

pytestmark = pytest.mark.netns

PORT1, PORT2 = 1, 2


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers() -> Iterator[None]:
    require_netns()
    yield
    assert_no_leftovers()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, namespaces=3)
    try:
        yield lab
    finally:
        lab.close()


@dataclass
class Hosts:
    lab: Lab
    ns1: str
    ns2: str
    if1: str
    if2: str
    veth1: str
    veth2: str
    pub1: str
    pub2: str

    def endpoint_seen_by(self, side: int) -> str:
        ifname = self.if1 if side == 1 else self.if2
        out = self.lab.wg("show", ifname, "endpoints").split()
        return out[1] if len(out) >= 2 else ""

    def ping(self, side: int, to: str, count: int = 1) -> subprocess.CompletedProcess[str]:
        ns = self.ns1 if side == 1 else self.ns2
        argv = ["ping", "-6" if ":" in to else "-4", "-c", str(count), "-W", "2", "-i", "0.2", to]
        return self.lab.sh(ns, *argv, check=False, timeout=10 + 3 * count)


def _hosts(lab: Lab, endpoint1: str | None = None, endpoint2: str | None = None) -> Hosts:
    """wgref (ns1) and wireguard-go (ns2) across a veth pair; ``endpointN`` is what side N
    is told about the other (None: it learns it)."""
    ns1, ns2 = lab.ns[1], lab.ns[2]
    if1, if2 = lab.ifname("a"), lab.ifname("b")
    veth1, veth2 = f"v{lab.id}a"[-15:], f"v{lab.id}b"[-15:]
    lab.sh(None, "ip", "link", "add", veth1, "netns", ns1, "type", "veth", "peer", "name", veth2,
           "netns", ns2)  # fmt: skip
    for ns, veth, host in ((ns1, veth1, "1"), (ns2, veth2, "2")):
        lab.sh(ns, "ip", "addr", "add", f"10.0.0.{host}/24", "dev", veth)
        lab.sh(ns, "ip", "addr", "add", f"fd00:aa::{host}/96", "dev", veth, "nodad")
        lab.sh(ns, "ip", "link", "set", veth, "up")
    lab.start("wgref", ns1, if1, {"LOG_LEVEL": "verbose"})
    lab.start("wireguard-go", ns2, if2, {"LOG_LEVEL": "verbose"})
    key1, key2 = genkey(), genkey()
    pub1, pub2 = pubkey(key1), pubkey(key2)
    for ifname, key, port, peer, addr, endpoint in (
        (if1, key1, PORT1, pub2, "2", endpoint1),
        (if2, key2, PORT2, pub1, "1", endpoint2),
    ):
        argv = ["set", ifname, "private-key", "/dev/stdin", "listen-port", str(port)]
        argv += ["peer", peer, "allowed-ips", f"192.168.241.{addr}/32,fd00::{addr}/128"]
        if endpoint:
            argv += ["endpoint", endpoint]
        lab.wg(*argv, stdin=key + "\n")
    for ns, ifname, host in ((ns1, if1, "1"), (ns2, if2, "2")):
        lab.sh(ns, "ip", "addr", "add", f"192.168.241.{host}/24", "dev", ifname)
        lab.sh(ns, "ip", "addr", "add", f"fd00::{host}/112", "dev", ifname, "nodad")
        lab.sh(ns, "ip", "link", "set", ifname, "up")
    return Hosts(lab, ns1, ns2, if1, if2, veth1, veth2, pub1, pub2)


# ----------------------------------------------------------------- sticky source addresses


@pytest.mark.parametrize(
    ("second", "prefix", "tunnel"),
    [("10.0.0.10", "24", "192.168.241.1"), ("fd00:aa::10", "96", "fd00::1")],
)
def test_reply_from_the_address_the_peer_wrote_to(
    lab: Lab, second: str, prefix: str, tunnel: str
) -> None:
    """Two addresses on one veth: the peer writes to the second, wgref answers from it (and
    keeps doing so for its own traffic); removing it makes the next send fall back at once."""
    h = _hosts(lab)
    # Routing never picks the second address as a source: a secondary IPv4 address, or a
    # deprecated IPv6 one (RFC 6724 rule 3); it is still ours to receive on and send from.
    options = ["nodad", "preferred_lft", "0"] if ":" in second else ["noprefixroute"]
    lab.sh(h.ns1, "ip", "addr", "add", f"{second}/{prefix}", "dev", h.veth1, *options)
    shown = f"[{second}]:{PORT1}" if ":" in second else f"{second}:{PORT1}"
    lab.wg("set", h.if2, "peer", h.pub1, "endpoint", shown)
    assert h.ping(2, tunnel).returncode == 0, lab.log(h.if1)
    # Routing would have picked the first address: wireguard-go would have moved to it.
    assert h.endpoint_seen_by(2) == shown
    wgref_sees = h.endpoint_seen_by(1)
    assert wgref_sees.endswith(f":{PORT2}")
    # wgref's own traffic (it sends first) still leaves from the remembered address.
    other = "192.168.241.2" if "." in tunnel else "fd00::2"
    assert h.ping(1, other, count=2).returncode == 0
    assert h.endpoint_seen_by(2) == shown
    # Not too sticky: the address goes, the next send leaves from what routing picks.
    lab.sh(h.ns1, "ip", "addr", "del", f"{second}/{prefix}", "dev", h.veth1)
    assert h.ping(1, other).returncode == 0, lab.log(h.if1)
    first = "[fd00:aa::1]" if ":" in second else "10.0.0.1"
    assert h.endpoint_seen_by(2) == f"{first}:{PORT1}"


def test_endpoint_set_by_wg_then_learnt_source(lab: Lab) -> None:
    """`wg set ... endpoint` on the wgref side: routing picks the source until a reply
    arrives; the kernel scenario of netns.sh with the roles swapped."""
    h = _hosts(lab, endpoint1=f"10.0.0.2:{PORT2}")
    lab.sh(h.ns1, "ip", "addr", "add", "10.0.0.10/24", "dev", h.veth1, "noprefixroute")
    assert h.ping(1, "192.168.241.2").returncode == 0, lab.log(h.if1)
    assert h.endpoint_seen_by(2) == f"10.0.0.1:{PORT1}"
    # wireguard-go now writes to .10: wgref follows with its replies.
    lab.wg("set", h.if2, "peer", h.pub1, "endpoint", f"10.0.0.10:{PORT1}")
    assert h.ping(2, "192.168.241.1").returncode == 0
    assert h.ping(1, "192.168.241.2").returncode == 0
    assert h.endpoint_seen_by(2) == f"10.0.0.10:{PORT1}"


def _second_link(h: Hosts) -> tuple[str, str]:
    """Another veth pair between the hosts: 10.0.1.1/24 (ns1) -- 10.0.1.2/24 (ns2)."""
    lab = h.lab
    veth3, veth4 = f"w{lab.id}a"[-15:], f"w{lab.id}b"[-15:]
    lab.sh(None, "ip", "link", "add", veth3, "netns", h.ns1, "type", "veth", "peer", "name",
           veth4, "netns", h.ns2)  # fmt: skip
    for ns, veth, host in ((h.ns1, veth3, "1"), (h.ns2, veth4, "2")):
        lab.sh(ns, "ip", "addr", "add", f"10.0.1.{host}/24", "dev", veth)
        lab.sh(ns, "ip", "link", "set", veth, "up")
    return veth3, veth4


def test_reply_from_an_address_of_another_interface(lab: Lab) -> None:
    """The peer writes to 10.0.0.1 (an address of the first link) through the second link:
    the reply leaves through the second link, where routing sends it, but from 10.0.0.1."""
    h = _hosts(lab)
    _, veth4 = _second_link(h)
    lab.sh(h.ns2, "ip", "route", "add", "10.0.0.1/32", "via", "10.0.1.1", "dev", veth4)
    lab.wg("set", h.if2, "peer", h.pub1, "endpoint", f"10.0.0.1:{PORT1}")
    assert h.ping(2, "192.168.241.1").returncode == 0, lab.log(h.if1)
    assert h.endpoint_seen_by(1) == f"10.0.1.2:{PORT2}"  # wireguard-go's routed source
    assert h.ping(1, "192.168.241.2", count=2).returncode == 0
    assert h.endpoint_seen_by(2) == f"10.0.0.1:{PORT1}"  # not 10.0.1.1, routing's choice


def test_more_specific_route_wins_over_the_remembered_source(lab: Lab) -> None:
    """A second link between the hosts and a /32 route to the peer over it: the route no
    longer leaves through the interface the peer's datagrams arrive on, so the remembered
    source is dropped and routing picks the source of the new way out (socket.c send4:
    ``rt->dst.dev->ifindex != endpoint->src_if4``); the peer then roams to it."""
    h = _hosts(lab, endpoint2=f"10.0.0.1:{PORT1}")
    veth3, _ = _second_link(h)
    assert h.ping(2, "192.168.241.1").returncode == 0, lab.log(h.if1)
    assert h.endpoint_seen_by(2) == f"10.0.0.1:{PORT1}"
    lab.sh(h.ns1, "ip", "route", "add", "10.0.0.2/32", "via", "10.0.1.2", "dev", veth3)
    assert h.ping(1, "192.168.241.2").returncode == 0, lab.log(h.if1)
    assert h.endpoint_seen_by(2) == f"10.0.1.1:{PORT1}"
    # Back to the first link once the route goes.
    lab.sh(h.ns1, "ip", "route", "del", "10.0.0.2/32")
    lab.wg("set", h.if2, "peer", h.pub1, "endpoint", f"10.0.0.1:{PORT1}")
    assert h.ping(2, "192.168.241.1").returncode == 0
    assert h.ping(1, "192.168.241.2").returncode == 0
    assert h.endpoint_seen_by(2) == f"10.0.0.1:{PORT1}"


# ----------------------------------------------------------------- padding to the route MTU


def _tx(h: Hosts) -> int:
    return int(h.lab.wg("show", h.if1, "transfer").split()[2])


@pytest.mark.parametrize(("route_mtu", "expected"), [(1299, 1331), (None, 1332), (1500, 1344)])
def test_padding_follows_the_route_mtu(lab: Lab, route_mtu: int | None, expected: int) -> None:
    """Interface MTU 1300, a route MTU of 1299 to the peer: a 1297-byte inner packet is
    padded to 1299, not 1300 (send.c calculate_skb_padding uses dst_mtu), so the datagram is
    1331 + 28 = 1359 bytes on the wire; without the route, 1360. A route MTU above the
    link's counts too (ipv4_mtu takes the route metric first): padded to 1312."""
    h = _hosts(lab, endpoint1=f"10.0.0.2:{PORT2}")
    lab.sh(h.ns1, "ip", "link", "set", h.if1, "mtu", "1300")
    if route_mtu is not None:
        lab.sh(h.ns1, "ip", "route", "add", "192.168.241.2/32", "dev", h.if1, "mtu",
               str(route_mtu))  # fmt: skip
    assert h.ping(1, "192.168.241.2").returncode == 0, lab.log(h.if1)
    # A UAPI request makes wgref read the link's MTU (as its 1 s poll does); the route
    # reaches it at once (rtnetlink).
    before = _tx(h)
    size = 1297 - 28
    result = lab.sh(h.ns1, "ping", "-4", "-c", "1", "-W", "2", "-s", str(size), "-M", "do",
                    "192.168.241.2", check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + lab.log(h.if1)
    assert _tx(h) - before == expected


# ----------------------------------------------------------------- routing loops


def _tx_bytes(lab: Lab, ns: str, ifname: str) -> int:
    out = lab.sh(ns, "cat", f"/sys/class/net/{ifname}/statistics/tx_bytes").stdout
    return int(out.strip())


def test_endpoint_route_through_the_tunnel_is_bounded(lab: Lab, record_property: object) -> None:
    """netns.sh "routing loops": the peer's endpoint is an address routed into wgref's own
    interface. Each encrypted datagram comes back in through the TUN; wgref must drop it,
    not encrypt it again (wireguard-go: hundreds of MB in 1 s; the kernel: well under
    70 KB). Measured as the bytes the kernel wrote into the tunnel link in 1 s."""
    h = _hosts(lab, endpoint1=f"10.0.0.2:{PORT2}")
    # A session first, so every packet is encrypted at once (the case that loops forever).
    assert h.ping(1, "192.168.241.2").returncode == 0
    lab.wg("set", h.if1, "peer", h.pub2, "endpoint", "192.168.241.2:7")
    before = _tx_bytes(lab, h.ns1, h.if1)
    start = time.monotonic()
    flood = subprocess.Popen(
        ["ip", "netns", "exec", h.ns1, "ping", "-f", "-w", "1", "-W", "1", "192.168.241.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab.procs.append(flood)
    flood.wait(timeout=20)
    looped = _tx_bytes(lab, h.ns1, h.if1) - before
    elapsed = time.monotonic() - start
    print(f"\nrouting loop: {looped} bytes into the tunnel link in {elapsed:.2f} s")
    assert looped < 70_000
    log = lab.log(h.if1)
    assert "Avoiding routing loop" in log, log[-2000:]
    # The daemon is alive and still answers.
    assert "listening port" in lab.wg("show", h.if1)


# ----------------------------------------------------------------- ICMP errors


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("192.168.241.99", "Destination Host Unreachable"),
        ("fd00::99", "Destination unreachable: Address unreachable"),
    ],
)
def test_ping_to_an_address_with_no_peer(lab: Lab, target: str, message: str) -> None:
    """No peer has the destination: the sender gets an ICMP error (kernel device.c wg_xmit
    icmp_ndo_send), sourced from its own address (the route back to it), at once."""
    h = _hosts(lab)
    result = h.ping(1, target, count=2)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout
    source = "192.168.241.1" if "." in target else "fd00::1"
    assert re.search(rf"From {re.escape(source)}\b", result.stdout), result.stdout


def test_icmp_error_when_the_link_was_moved_to_another_namespace(lab: Lab) -> None:
    """netns.sh's layout: wgref's sockets stay in ns0, its link lives in ns1; the error is
    made and sent in the link's namespace."""
    pair = Pair(lab)
    pair.configure()
    result = lab.sh(pair.ns1, "ping", "-c", "1", "-W", "2", "192.168.241.99", check=False)
    assert "From 192.168.241.1 icmp_seq=1 Destination Host Unreachable" in result.stdout, (
        result.stdout + lab.log(pair.if1)
    )
    assert pair.ping(1, "192.168.241.2")


def test_icmp_errors_under_a_flood(lab: Lab) -> None:
    """A ping flood to an address no peer has: errors come back (within the kernel's limits,
    tests/shells/test_netio.py checks those), and the daemon keeps answering."""
    h = _hosts(lab)
    result = h.lab.sh(
        h.ns1, "ping", "-f", "-c", "400", "-w", "5", "192.168.241.77", check=False, timeout=20
    )
    errors = re.search(r"\+(\d+) errors", result.stdout)
    assert errors is not None, result.stdout
    assert 0 < int(errors.group(1)) <= 400
    wait_for(lambda: "listening port" in lab.wg("show", h.if1), 5, "wgref to answer")
