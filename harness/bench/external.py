"""External client mode: the server side of a bench, waiting for a client that runs elsewhere.

A namespace ``PREFIX-srv`` gets a WireGuard peer (wireguard-go or wgref) and a one-off
``iperf3 -s -J`` bound to the tunnel address. It is reachable through one new veth pair whose
outer end sits in the root namespace (or ``--outside-ns NS``) with addresses from the
benchmarking range 198.18.0.0/15; no existing interface, route or sysctl of the host is
touched, and deleting the namespace removes the veth pair with it. The client's wg-quick file
is written, the commands to run are printed, and the bench waits (bounded) for one iperf3 run
and records what the server saw."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import keys, naming, registry_files
from ..context import INNER_V4, SERVER_PORT
from ..peers.base import DriverError, InterfaceConfig, PeerDriver, PeerEntry, PeerInstance
from ..results import now_iso
from ..shell import Background, CommandError, run
from ..topology import Host, remove_namespace
from .cpu import session_cpu_seconds
from .iperf import PORT, describe_server, load_json, server_argv
from .lab import LabError, peer_session, wait_listening

SUBNETS = ipaddress.IPv4Network("198.18.248.0/22")  # /30s for the outside link
CLIENT_IFNAME = "wgbench"
MTU = 1420


class ExternalError(RuntimeError):
    """The server side could not be set up."""


@dataclass
class ExternalResult:
    started: str
    server_peer: str
    server_version: str
    outside: str  # "root namespace" or the namespace name
    endpoint: str
    client_conf: str
    status: str = "waiting"  # ok | timeout | error | interrupted
    reason: str = ""
    waited_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    test: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    ended: str = ""
    prefix: str = ""  # of the namespace and interfaces (for `harness cleanup --prefix`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def used_networks(ns: str | None) -> list[ipaddress.IPv4Network]:
    """IPv4 networks of addresses and routes that exist in the namespace (None: root)."""
    nets: list[ipaddress.IPv4Network] = []
    addrs = run(["ip", "-4", "-o", "addr", "show"], ns=ns, timeout=10, check=False).stdout
    for line in addrs.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    routes = run(["ip", "-4", "route", "show", "table", "all"], ns=ns, timeout=10,
                 check=False).stdout
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            try:
                nets.append(ipaddress.IPv4Network(word, strict=False))
            except ValueError:
                continue
    return nets


def pick_subnet(prefix: str, used: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """A /30 of 198.18.248.0/22 that overlaps nothing in use, starting at one derived from
    the run prefix (so concurrent runs rarely try the same one)."""
    subnets = list(SUBNETS.subnets(new_prefix=30))
    start = int(prefix[-4:], 16) % len(subnets)
    for net in subnets[start:] + subnets[:start]:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise ExternalError(f"every /30 of {SUBNETS} is in use")


def client_conf(private_key: str, server_public: str, endpoint: str) -> str:
    return "\n".join([
        "# wgref bench, external client: `wg-quick up ./wgbench.conf` (or import it into any",
        "# WireGuard client), then run iperf3 against the server's tunnel address.",
        "[Interface]",
        f"PrivateKey = {private_key}",
        f"Address = {INNER_V4['client']}/32",
        f"MTU = {MTU}",
        "",
        "[Peer]",
        f"PublicKey = {server_public}",
        f"Endpoint = {endpoint}",
        f"AllowedIPs = {INNER_V4['server']}/32",
        "",
    ])


def instructions(conf: Path, seconds: int, outside: str) -> str:
    target = INNER_V4["server"]
    where = ("from this machine's root namespace" if outside == "root namespace"
             else f"inside the namespace {outside} (ip netns exec {outside} ...)")
    return f"""The server is up. From the client ({where}):

  wg-quick up {conf}
  iperf3 -c {target} -t {seconds}            # upload; add -R for download, -P 4 for 4 streams
  wg-quick down {conf}

Userspace WireGuard for wg-quick: WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go (or wgref).
The server accepts ONE iperf3 run (iperf3 -s --one-off) and records its JSON."""


@dataclass
class ExternalServer:
    prefix: str
    folder: Path
    outside_ns: str | None
    ns: str = ""
    instance: PeerInstance | None = None
    iperf: Background | None = None
    host: Host | None = None
    created: bool = False

    def up(self, driver: PeerDriver) -> tuple[str, str, str]:
        """Build the namespace, link and peer; returns (endpoint, server public key,
        client private key)."""
        registry_files.claim(self.prefix)
        self.ns = naming.namespace(self.prefix, "srv")
        inside, outside = naming.ifname(self.prefix, "x"), naming.ifname(self.prefix, "o")
        try:
            net = pick_subnet(self.prefix, used_networks(self.outside_ns))
            outer, server_addr = (str(a) for a in list(net.hosts())[:2])
            run(["ip", "netns", "add", self.ns])
            self.created = True
            run(["ip", "link", "set", "lo", "up"], ns=self.ns)
            peer_side = ["netns", self.outside_ns] if self.outside_ns else []
            run(["ip", "link", "add", inside, "netns", self.ns, "type", "veth", "peer",
                 "name", outside, *peer_side])
            run(["ip", "addr", "add", f"{outer}/30", "dev", outside], ns=self.outside_ns)
            run(["ip", "link", "set", outside, "up"], ns=self.outside_ns)
            run(["ip", "addr", "add", f"{server_addr}/30", "dev", inside], ns=self.ns)
            run(["ip", "link", "set", inside, "up"], ns=self.ns)
            run(["ip", "route", "add", "default", "via", outer], ns=self.ns)
            self.host = Host("server", self.ns, 1, inside, outside, v4=server_addr)
            server_kp, client_kp = keys.keypair(), keys.keypair()
            config = InterfaceConfig(
                naming.ifname(self.prefix, "wgs"), server_kp.private,
                (f"{INNER_V4['server']}/24",), SERVER_PORT, MTU,
                [PeerEntry(client_kp.public, (f"{INNER_V4['client']}/32",))],
                log_level="error")
            self.instance = driver.start(self.host, config, self.folder)
        except (CommandError, DriverError) as exc:
            raise ExternalError(str(exc)) from exc
        return f"{server_addr}:{SERVER_PORT}", server_kp.public, client_kp.private

    def start_iperf(self, log: Path) -> Background:
        assert self.host is not None
        self.iperf = self.host.spawn("iperf3-server",
                                     server_argv(bind=INNER_V4["server"], json_out=True), log)
        try:
            wait_listening(self.host, PORT, self.iperf)
        except LabError as exc:
            raise ExternalError(str(exc)) from exc
        return self.iperf

    def cpu(self) -> float | None:
        session = peer_session(self.instance) if self.instance else None
        return None if session is None else session_cpu_seconds(session)

    def down(self) -> None:
        if self.iperf is not None:
            self.iperf.stop(grace=1.0)
        if self.instance is not None:
            with contextlib.suppress(DriverError, CommandError):
                self.instance.stop()
        if self.created:
            remove_namespace(self.ns)  # takes the veth pair (and its outer end) with it
        registry_files.release(self.prefix)


def serve_external(driver: PeerDriver, out: Path, *, wait: float, seconds: int,
                   outside_ns: str | None, say: Callable[[str], None] = print) -> ExternalResult:
    out.mkdir(parents=True, exist_ok=True)
    server = ExternalServer(naming.new_prefix(), out, outside_ns)
    outside = outside_ns or "root namespace"
    conf_path = out / f"{CLIENT_IFNAME}.conf"
    result = ExternalResult(now_iso(), driver.name, driver.version(), outside, "",
                            str(conf_path), prefix=server.prefix)
    try:
        endpoint, server_public, client_private = server.up(driver)
        result.endpoint = endpoint
        conf_path.write_text(client_conf(client_private, server_public, endpoint))
        conf_path.chmod(0o600)
        iperf = server.start_iperf(out / "iperf3-server.log")
        cpu_before = server.cpu()
        say(instructions(conf_path, seconds, outside))
        say(f"waiting up to {wait:g} s for the client's iperf3 run ...")
        started = time.monotonic()
        while time.monotonic() - started < wait and iperf.alive():
            problem = server.instance.problem() if server.instance else None
            if problem:
                raise ExternalError(problem)
            time.sleep(0.2)
        result.waited_seconds = round(time.monotonic() - started, 1)
        cpu_after = server.cpu()
        if cpu_before is not None and cpu_after is not None:
            result.server_cpu_seconds = round(cpu_after - cpu_before, 3)
        if iperf.alive():
            result.status, result.reason = "timeout", f"no iperf3 run within {wait:g} s"
        else:
            data = load_json(iperf.log.read_text(errors="replace"))
            raw = out / "iperf3-server.json"
            raw.write_text(json.dumps(data, indent=2) + "\n")
            result.raw = str(raw)
            result.test = describe_server(data)
            error = result.test.get("error")
            result.status, result.reason = ("error", str(error)) if error else ("ok", "")
    except (ExternalError, ValueError) as exc:
        result.status, result.reason = "error", str(exc)
    finally:
        if result.status == "waiting":  # Ctrl-C, SIGTERM or an unexpected error
            result.status, result.reason = "interrupted", "stopped before a run was recorded"
        server.down()
        result.ended = now_iso()
        (out / "bench-external.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
