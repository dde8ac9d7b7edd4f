"""Network topologies on Linux network namespaces (iproute2, nftables, tc via subprocess).

Every host is a namespace with one veth link to a router namespace (the "internet"). The router
forwards IPv4 and IPv6 and owns one nftables table (named after the run prefix) for source NAT
and for dropping a host's traffic. Hosts can roam (change their outer addresses) and links can be
shaped with netem. Nothing is created in the root namespace: veth pairs are created directly
inside their namespaces, and deleting the namespaces removes everything.

Addressing: host number ``i`` (1, 2, ...) gets 198.18.i.0/24 and 2001:db8:i::/64 (benchmarking
and documentation ranges); the router is ``.1``/``::1`` and the host ``.2``/``::2`` (``.3``...
after roaming).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from . import naming, registry_files
from .shell import Background, CommandError, Result, run, spawn


class TopologyError(RuntimeError):
    """The topology could not be built or changed."""


@dataclass
class Host:
    """One namespace with a link to the router."""

    name: str
    ns: str
    index: int
    ifname: str  # host side of the link
    router_ifname: str  # router side of the link
    nat: bool = False
    mtu: int = 1500
    v4: str | None = None  # current outer addresses (no prefix length)
    v6: str | None = None
    host_part: int = 2
    background: list[Background] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> Result:
        return run(argv, ns=self.ns, timeout=timeout, check=check)

    def spawn(self, name: str, argv: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> Background:
        proc = spawn(name, argv, log, ns=self.ns, env=env)
        self.background.append(proc)
        return proc

    def address(self, family: int) -> str:
        addr = self.v4 if family == 4 else self.v6
        if addr is None:
            raise TopologyError(f"host {self.name} has no IPv{family} outer address")
        return addr

    def capture_point(self) -> tuple[Host, str]:
        """Who captures the host's outer traffic, and on which interface (the host itself on
        its link here; the Docker backend captures on the router's side of the link)."""
        return self, self.ifname

    def capture_traffic(self, name: str, ifname: str, path: Path, *, bpf: str | None = None,
                        max_packets: int | None = None) -> Background:
        """Capture ``ifname`` here into ``path`` (pcapng); returns once capturing."""
        from .capture import dumpcap  # harness.capture builds on this module

        return dumpcap(self, name, ifname, path, bpf=bpf, max_packets=max_packets)

    def serving(self, sock: Path) -> bool:
        """A program here accepts connections on the UNIX socket ``sock`` (a stale file
        does not count)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(sock))
            except OSError:
                return False
        return True

    def fetch(self, path: Path) -> None:
        """Make a file that a program here wrote readable at ``path`` by the harness (it
        already is: a namespace shares this machine's files)."""


def v4_address(index: int, host_part: int) -> str:
    return f"198.18.{index}.{host_part}"


def v6_address(index: int, host_part: int) -> str:
    return f"2001:db8:{index}::{host_part}"


class Topology:
    """Hosts around a router; use as a context manager so teardown always happens."""

    ROUTER = "r"

    def __init__(self, prefix: str, *, ipv4: bool = True, ipv6: bool = True) -> None:
        if not (ipv4 or ipv6):
            raise TopologyError("a topology needs IPv4 or IPv6")
        self.prefix = prefix
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.router_ns = naming.namespace(prefix, self.ROUTER)
        self.hosts: dict[str, Host] = {}
        self.table = prefix  # nftables table (inet family) in the router namespace
        self._created: list[str] = []
        self._loss: dict[str, int] = {}

    # -- building ---------------------------------------------------------------------------

    def add_host(self, name: str, *, nat: bool = False, mtu: int = 1500) -> Host:
        if name in self.hosts or name == self.ROUTER:
            raise TopologyError(f"duplicate host name {name!r}")
        index = len(self.hosts) + 1
        host = Host(
            name=name,
            ns=naming.namespace(self.prefix, name),
            index=index,
            ifname=naming.ifname(self.prefix, f"h{index}"),
            router_ifname=naming.ifname(self.prefix, f"r{index}"),
            nat=nat,
            mtu=mtu,
        )
        self.hosts[name] = host
        return host

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise TopologyError(f"no host {name!r} in the topology") from None

    def up(self) -> None:
        registry_files.claim(self.prefix)  # `harness cleanup` leaves a live run alone
        try:
            self._add_namespace(self.router_ns)
            self._sysctl(self.router_ns, "net.ipv4.ip_forward", "1")
            self._sysctl(self.router_ns, "net.ipv6.conf.all.forwarding", "1")
            for host in self.hosts.values():
                self._build_host(host)
            self._nft(self._ruleset())
        except (CommandError, TopologyError) as exc:
            self.down()
            raise TopologyError(f"cannot build the topology: {exc}") from exc

    def _add_namespace(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self._created.append(ns)
        run(["ip", "link", "set", "lo", "up"], ns=ns)

    def _build_host(self, host: Host) -> None:
        self._add_namespace(host.ns)
        run([
            "ip", "link", "add", host.ifname, "netns", host.ns, "mtu", str(host.mtu),
            "type", "veth", "peer", "name", host.router_ifname,
            "netns", self.router_ns, "mtu", str(host.mtu),
        ])
        self._sysctl(host.ns, "net.ipv4.conf.all.promote_secondaries", "1")
        self._sysctl(host.ns, f"net.ipv4.conf.{host.ifname}.promote_secondaries", "1")
        self._sysctl(host.ns, "net.ipv6.conf.all.accept_dad", "0")
        self._sysctl(host.ns, f"net.ipv6.conf.{host.ifname}.accept_dad", "0")
        self._sysctl(self.router_ns, f"net.ipv6.conf.{host.router_ifname}.accept_dad", "0")
        rns, hns = self.router_ns, host.ns
        if self.ipv4:
            host.v4 = v4_address(host.index, host.host_part)
            run(["ip", "addr", "add", f"{v4_address(host.index, 1)}/24",
                 "dev", host.router_ifname], ns=rns)
            run(["ip", "addr", "add", f"{host.v4}/24", "dev", host.ifname], ns=hns)
        if self.ipv6:
            host.v6 = v6_address(host.index, host.host_part)
            run(["ip", "addr", "add", f"{v6_address(host.index, 1)}/64",
                 "dev", host.router_ifname, "nodad"], ns=rns)
            run(["ip", "addr", "add", f"{host.v6}/64", "dev", host.ifname, "nodad"], ns=hns)
        run(["ip", "link", "set", host.router_ifname, "up"], ns=rns)
        run(["ip", "link", "set", host.ifname, "up"], ns=hns)
        if self.ipv4:
            run(["ip", "route", "add", "default", "via", v4_address(host.index, 1)], ns=hns)
        if self.ipv6:
            run(["ip", "-6", "route", "add", "default", "via", v6_address(host.index, 1)],
                ns=hns)

    def _ruleset(self) -> str:
        sources: list[tuple[str, str, str]] = []
        for host in self.hosts.values():
            if host.nat and self.ipv4:
                sources.append(("ip", f"198.18.{host.index}.0/24", host.router_ifname))
            if host.nat and self.ipv6:
                sources.append(("ip6", f"2001:db8:{host.index}::/64", host.router_ifname))
        return router_ruleset(self.table, sources)

    def _nft(self, script: str) -> None:
        run(["nft", "-f", "-"], ns=self.router_ns, input_text=script)

    @staticmethod
    def _sysctl(ns: str, key: str, value: str) -> None:
        run(["sysctl", "-q", "-w", f"{key}={value}"], ns=ns)

    # -- changing -----------------------------------------------------------------------------

    def set_conntrack_udp_timeout(self, seconds: int) -> None:
        """Short UDP conntrack timeouts in the router, so idle NAT mappings expire quickly."""
        for key in ("net.netfilter.nf_conntrack_udp_timeout",
                    "net.netfilter.nf_conntrack_udp_timeout_stream"):
            try:
                self._sysctl(self.router_ns, key, str(seconds))
            except CommandError as exc:
                raise TopologyError(f"cannot set {key} in the router: {exc}") from exc

    def roam(self, name: str) -> Host:
        """Give the host new outer addresses (the next host number) and remove the old ones."""
        host = self.host(name)
        old_v4, old_v6 = host.v4, host.v6
        host.host_part += 1
        if old_v4 is not None:
            host.v4 = v4_address(host.index, host.host_part)
            host.run(["ip", "addr", "add", f"{host.v4}/24", "dev", host.ifname])
            host.run(["ip", "addr", "del", f"{old_v4}/24", "dev", host.ifname])
            self._ensure_default(host, 4)
        if old_v6 is not None:
            host.v6 = v6_address(host.index, host.host_part)
            host.run(["ip", "addr", "add", f"{host.v6}/64", "dev", host.ifname, "nodad"])
            host.run(["ip", "addr", "del", f"{old_v6}/64", "dev", host.ifname])
            self._ensure_default(host, 6)
        return host

    def _ensure_default(self, host: Host, family: int) -> None:
        gateway = v4_address(host.index, 1) if family == 4 else v6_address(host.index, 1)
        host.run(["ip", f"-{family}", "route", "replace", "default", "via", gateway])

    def shape(self, name: str, *, rate: str | None = None, loss_percent: int = 0) -> None:
        """Limit the host's link rate both ways (tc tbf, e.g. rate="10mbit") and drop a random
        ``loss_percent`` of what the router forwards to or from it (nftables numgen).
        This kernel has no netem, so delay is not offered. No arguments undo both."""
        host = self.host(name)
        for ns, dev in ((host.ns, host.ifname), (self.router_ns, host.router_ifname)):
            if rate:
                run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                     "burst", "64kb", "latency", "200ms"], ns=ns)
            else:
                run(["tc", "qdisc", "del", "dev", dev, "root"], ns=ns, check=False)
        self._loss[host.router_ifname] = loss_percent
        self._nft(loss_rules(self.table, self._loss))

    def block(self, name: str, blocked: bool = True) -> None:
        """Drop (or stop dropping) everything the router forwards to or from the host."""
        host = self.host(name)
        verb = "add" if blocked else "delete"
        run(["nft", verb, "element", "inet", self.table, "blocked",
             f'{{ "{host.router_ifname}" }}'], ns=self.router_ns)

    # -- teardown -----------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every process of the run's namespaces and delete them; returns problems."""
        problems: list[str] = []
        for host in self.hosts.values():
            for proc in host.background:
                proc.stop(grace=2.0)
        for ns in reversed(self._created):
            problems += remove_namespace(ns)
        self._created.clear()
        registry_files.release(self.prefix)
        return problems

    def __enter__(self) -> Topology:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


def namespace_pids(ns: str) -> list[int]:
    result = run(["ip", "netns", "pids", ns], check=False, timeout=10)
    return [int(tok) for tok in result.stdout.split() if tok.isdigit()]


def remove_namespace(ns: str) -> list[str]:
    """Kill every process in the namespace (TERM, then KILL) and delete it."""
    import os
    import signal

    problems: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and namespace_pids(ns):
            time.sleep(0.05)
    result = run(["ip", "netns", "del", ns], check=False, timeout=20)
    if not result.ok and "No such file" not in result.stderr:
        problems.append(result.describe())
    return problems


def router_ruleset(table: str, nat_sources: list[tuple[str, str, str]]) -> str:
    """The router's nftables table (both backends): a set of blocked interfaces, a ``loss``
    chain that shaping fills, and masquerade for each (family, source prefix, the router's
    interface towards that host) leaving by any other interface."""
    nat = "\n".join(
        f'    {family} saddr {prefix} oifname != "{ifname}" masquerade'
        for family, prefix, ifname in nat_sources
    )
    return f"""table inet {table} {{
  set blocked {{ type ifname; }}
  chain loss {{
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname @blocked drop
    oifname @blocked drop
    jump loss
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
{nat}
  }}
}}
"""


def loss_rules(table: str, losses: Mapping[str, float]) -> str:
    """An nft script that refills the router's ``loss`` chain: drop ``pct`` percent of what
    enters or leaves each router interface (both backends)."""
    def drop(pct: float) -> str:  # numgen's range is 0-99: 100 % is a plain drop
        return "drop" if pct >= 100 else f"numgen random mod 100 < {pct} drop"

    rules = "".join(
        f'add rule inet {table} loss iifname "{dev}" {drop(pct)}\n'
        f'add rule inet {table} loss oifname "{dev}" {drop(pct)}\n'
        for dev, pct in losses.items() if pct > 0
    )
    return f"flush chain inet {table} loss\n{rules}"
