"""The Docker backend: the same topology as :mod:`harness.topology`, with containers as hosts.

* Every host is a container of its peer's image (``--cap-add NET_ADMIN --device
  /dev/net/tun``), alone on a user-defined bridge network (its "link"); a privileged router
  container is on every link, forwards, NATs and drops with nftables (one table named after
  the run prefix, as in the netns backend) and has short conntrack timeouts when asked.
* Subnets: /24s of 198.18.0.0/15 and /64s of 2001:db8::/32 that overlap none of the host's
  routes and addresses nor any other Docker network (host i prefers 198.18.i.0/24). The
  router is ``.254`` on each link, a host ``.2`` (``.3``... after roaming); docker's bridge
  address ``.1`` is never used as a gateway (the hosts' default route goes to the router).
* Roaming disconnects the host's container from its network and connects it again with the
  next address.
* Commands run inside a container through ``nsenter`` into its namespaces (so they are bounded
  in time and killable like the netns backend's, and their output lands in the host's files);
  the repository is mounted read-only and the output folder read-write at the same paths, so
  logs, key logs, configuration files and the harness's Python helpers (echo, flood) are where
  the runner expects them; ``/var/run/wireguard`` is shared, so UAPI sockets appear on the host.
* Captures run the host's dumpcap in the router's network namespace on the router's side of
  the host's link (it sees the same outer packets and survives roaming).
* Everything carries the run prefix in its name and in the label ``org.wgref.harness.run``;
  :meth:`DockerTopology.down` and `python -m harness cleanup` remove it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import naming, registry_files
from ..shell import Background, CommandError, Result, run, spawn
from ..topology import Host, Topology, TopologyError, loss_rules, router_ruleset
from . import labels
from .client import DockerUnavailable, connect, sdk

ROOT = Path(__file__).resolve().parent.parent.parent
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_IN_IMAGE = "python3"
_NETWORKS_LOCK = threading.Lock()
NETWORK_RETRIES = 8


def python_names() -> set[str]:
    """Host interpreters that the harness puts in argv (they become python3 in a container)."""
    names = {sys.executable}
    wheels = os.environ.get("HARNESS_WHEELS_PYTHON")
    if wheels:
        names.add(wheels)
    return names


def container_argv(argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """``argv`` as it runs inside a container: a clean environment (PATH and ``env`` only)
    and the host's Python replaced by the image's."""
    pythons = python_names()
    words = [PYTHON_IN_IMAGE if word in pythons else word for word in argv]
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", *extra, *words]


def nsenter(pid: int, argv: Sequence[str], *, workdir: str = "/", mount: bool = True) -> list[str]:
    """Run argv in the namespaces of process ``pid`` (a container's init): all of them, or
    only its network namespace (``mount=False``: the host's programs and files)."""
    if mount:
        # -p: /proc inside is the container's, so /proc/self must be a process of its PID
        # namespace; nsenter then forks (see ContainerBackground for what that means)
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", f"--wd={workdir}",
                "--", *argv]
    return ["nsenter", "-t", str(pid), "-n", "--", *argv]


def _group_alive(pgid: int) -> bool:
    """True while a process of the group is alive (zombies do not count: a program that
    nsenter forked is orphaned to the machine's init, which may be slow to reap it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


@dataclass
class ContainerBackground(Background):
    """A program started through ``nsenter -p``: nsenter forks it into the container's PID
    namespace, waits for it and exits with its status, but dies at once when signalled. So
    stopping signals the whole process group (nsenter and the program) and then also waits
    for the program to be gone, as the netns backend's stop() does for a direct child."""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
        pgid = self.proc.pid
        code = super().stop(sig, grace)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        return code


@dataclass
class DockerHost(Host):
    """A container standing in for a namespace: run/spawn go inside it."""

    container: str = ""  # name
    image: str = ""
    pid: int = 0
    workdir: str = "/"
    network: str = ""  # the link's network name
    subnet4: str = ""
    subnet6: str = ""
    capture: tuple[Host, str] | None = None

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> Result:
        if not self.pid:
            raise TopologyError(f"container {self.container} is not running")
        return run(nsenter(self.pid, container_argv(argv), workdir=self.workdir),
                   timeout=timeout, check=check)

    def spawn(self, name: str, argv: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> Background:
        if not self.pid:
            raise TopologyError(f"container {self.container} is not running")
        started = spawn(name, nsenter(self.pid, container_argv(argv, env),
                                      workdir=self.workdir), log)
        proc = ContainerBackground(started.name, started.argv, started.log, started.proc)
        self.background.append(proc)
        return proc

    def capture_point(self) -> tuple[Host, str]:
        return self.capture if self.capture is not None else (self, self.ifname)


@dataclass
class NetnsView(Host):
    """A container's network namespace with the host's programs and files (for dumpcap)."""

    pid: int = 0

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> Result:
        return run(nsenter(self.pid, argv, mount=False), timeout=timeout, check=check)

    def spawn(self, name: str, argv: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> Background:
        proc = spawn(name, nsenter(self.pid, argv, mount=False), log, env=env)
        self.background.append(proc)
        return proc


def host_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    lines: list[str] = []
    for argv in (["ip", "-o", "addr"], ["ip", "route"], ["ip", "-6", "route"]):
        lines += run(argv, check=False, timeout=10).stdout.splitlines()
    return labels.parse_networks(lines)


def docker_networks(client: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in client.api.networks():
        for conf in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.append(ipaddress.ip_network(conf["Subnet"], strict=False))
    return out


class DockerTopology(Topology):
    """Hosts around a router, as containers; a drop-in for :class:`harness.topology.Topology`."""

    def __init__(self, prefix: str, *, images: dict[str, str], router_image: str,
                 mounts: Sequence[Path] = (), ipv4: bool = True, ipv6: bool = True) -> None:
        super().__init__(prefix, ipv4=ipv4, ipv6=ipv6)
        self.images = images  # host name -> image
        self.router_image = router_image
        self.mounts = [Path(m).resolve() for m in mounts]
        cwd = Path.cwd()
        self.workdir = str(cwd) if any(cwd in m.parents or cwd == m for m in self.mounts) \
            else "/"
        self.router: DockerHost | None = None
        self.router_view: NetnsView | None = None  # its netns with the host's tools
        self._containers: list[str] = []
        self._networks: list[str] = []
        self._client: Any = None

    # -- building ---------------------------------------------------------------------------

    def add_host(self, name: str, *, nat: bool = False, mtu: int = 1500) -> Host:
        if name in self.hosts or name == self.ROUTER:
            raise TopologyError(f"duplicate host name {name!r}")
        if name not in self.images:
            raise TopologyError(f"no image for host {name!r}")
        index = len(self.hosts) + 1
        host = DockerHost(
            name=name, ns=labels.container_name(self.prefix, name), index=index,
            ifname=naming.ifname(self.prefix, f"h{index}"),
            router_ifname=naming.ifname(self.prefix, f"r{index}"), nat=nat, mtu=mtu,
            container=labels.container_name(self.prefix, name), image=self.images[name],
            workdir=self.workdir, network=labels.network_name(self.prefix, index))
        self.hosts[name] = host
        return host

    def up(self) -> None:
        registry_files.claim(self.prefix)
        try:
            self._client = connect()
            self._build()
        except DockerUnavailable as exc:
            self.down()
            raise TopologyError(str(exc)) from exc
        except (CommandError, TopologyError, OSError) as exc:
            self.down()
            raise TopologyError(f"cannot build the docker topology: {exc}") from exc
        except Exception as exc:  # the SDK's errors (docker.errors.APIError, ...)
            self.down()
            raise TopologyError(f"docker: {str(exc)[:600]}") from exc

    def _build(self) -> None:
        api = self._client.api
        hosts = self._docker_hosts()
        self._create_networks(hosts)
        router = DockerHost(
            name=self.ROUTER, ns=labels.container_name(self.prefix, self.ROUTER), index=0,
            ifname="", router_ifname="", container=labels.container_name(
                self.prefix, self.ROUTER), image=self.router_image, workdir=self.workdir)
        self.router = router
        first, *rest = hosts
        self._create_container(router, first.network, self._endpoint(first, router=True),
                               router=True, role="router")
        for host in rest:
            api.connect_container_to_network(router.container, host.network,
                                             **self._endpoint(host, router=True))
        for host in hosts:
            self._create_container(host, host.network, self._endpoint(host), role=host.name)
        for container in [router, *hosts]:
            api.start(container.container)
            container.pid = int(api.inspect_container(container.container)["State"]["Pid"])
        self._configure_router(router, hosts)
        for host in hosts:
            self._configure_host(host)

    def _docker_hosts(self) -> list[DockerHost]:
        out = []
        for host in self.hosts.values():
            assert isinstance(host, DockerHost)
            out.append(host)
        return out

    def _docker_host(self, name: str) -> DockerHost:
        host = self.host(name)
        assert isinstance(host, DockerHost)
        return host

    def _create_networks(self, hosts: list[DockerHost]) -> None:
        # Cells of one run (--jobs) choose and create their networks one at a time, so they
        # never pick the same free subnets; other runs on the engine are met by the retries.
        with _NETWORKS_LOCK:
            self._create_networks_unlocked(hosts)

    def _create_networks_unlocked(self, hosts: list[DockerHost]) -> None:
        taken = [*host_networks(), *docker_networks(self._client)]
        for attempt in range(NETWORK_RETRIES):
            subnets = labels.choose_subnets(len(hosts), taken)
            try:
                for host, (v4, v6) in zip(hosts, subnets, strict=True):
                    if host.network in self._networks:
                        continue
                    self._create_network(host, v4, v6)
                return
            except Exception as exc:
                if "overlap" not in str(exc).lower() or attempt == NETWORK_RETRIES - 1:
                    raise
                taken = [*host_networks(), *docker_networks(self._client)]
                time.sleep(0.2)  # another run took it meanwhile: choose again

    def _create_network(self, host: DockerHost, v4: ipaddress.IPv4Network,
                        v6: ipaddress.IPv6Network) -> None:
        docker = sdk()

        pools = [docker.types.IPAMPool(subnet=str(v4), gateway=labels.host_address(
            v4, labels.GATEWAY_HOST_PART))]
        if self.ipv6:
            pools.append(docker.types.IPAMPool(subnet=str(v6), gateway=labels.host_address(
                v6, labels.GATEWAY_HOST_PART)))
        self._client.api.create_network(
            host.network, driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=pools),
            enable_ipv6=self.ipv6, labels=labels.run_labels(self.prefix, f"link-{host.name}"),
            options={"com.docker.network.bridge.enable_ip_masquerade": "false",
                     "com.docker.network.driver.mtu": str(host.mtu),
                     "com.docker.network.bridge.name": host.router_ifname.replace(
                         self.prefix, f"{self.prefix}b", 1)[:15]})
        self._networks.append(host.network)
        host.subnet4, host.subnet6 = str(v4), str(v6)

    def _endpoint(self, host: DockerHost, *, router: bool = False) -> dict[str, str]:
        v4 = ipaddress.ip_network(host.subnet4)
        v6 = ipaddress.ip_network(host.subnet6)
        part = labels.ROUTER_HOST_PART if router else host.host_part
        out = {"ipv4_address": labels.host_address(v4, part)}
        if self.ipv6:
            out["ipv6_address"] = labels.host_address(v6, part)
        return out

    def _create_container(self, host: DockerHost, network: str, endpoint: dict[str, str], *,
                          router: bool = False, role: str) -> None:
        api = self._client.api
        binds = {"/var/run/wireguard": {"bind": "/var/run/wireguard", "mode": "rw"},
                 str(ROOT): {"bind": str(ROOT), "mode": "ro"}}
        for mount in self.mounts:
            binds[str(mount)] = {"bind": str(mount), "mode": "rw"}
        Path(naming.WG_SOCKET_DIR).mkdir(parents=True, exist_ok=True)
        sysctls = {"net.ipv6.conf.all.disable_ipv6": "0",  # IPv6 inside the tunnel
                   "net.ipv6.conf.default.disable_ipv6": "0",
                   "net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
                   "net.ipv4.conf.all.promote_secondaries": "1"}
        if router:
            sysctls.update({"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
        host_config = api.create_host_config(
            binds=binds, cap_add=["NET_ADMIN", "NET_RAW"],
            devices=["/dev/net/tun:/dev/net/tun:rwm"], sysctls=sysctls, init=True,
            network_mode=network)
        networking = api.create_networking_config(
            {network: api.create_endpoint_config(**endpoint)})
        api.create_container(
            host.image, command=["sleep", "infinity"], name=host.container,
            hostname=f"{host.name}", labels=labels.run_labels(self.prefix, role),
            host_config=host_config, networking_config=networking)
        self._containers.append(host.container)

    def _interface_with(self, host: DockerHost, address: str) -> str:
        """The name of the container's interface holding ``address``."""
        out = host.run(["ip", "-o", "addr", "show"], timeout=10).stdout
        for line in out.splitlines():
            words = line.split()
            if len(words) > 3 and words[3].split("/")[0] == address:
                return words[1].split("@")[0]
        raise TopologyError(f"{host.container} has no interface with {address}")

    def _configure_router(self, router: DockerHost, hosts: list[DockerHost]) -> None:
        view = NetnsView(name="router", ns=router.container, index=0, ifname="",
                         router_ifname="", pid=router.pid)
        self.router_view = view
        for host in hosts:
            address = self._endpoint(host, router=True)["ipv4_address"]
            host.router_ifname = self._interface_with(router, address)
            host.capture = (view, host.router_ifname)
        self._nft(self._ruleset())

    def _configure_host(self, host: DockerHost) -> None:
        ends = self._endpoint(host)
        # docker names the link (eth0, eth1 after a reconnect...); renaming it would need it
        # down, which drops its IPv6 addresses, so the host's ifname follows docker's name
        host.ifname = self._interface_with(host, ends["ipv4_address"])
        host.v4 = ends["ipv4_address"] if self.ipv4 else None
        host.v6 = ends.get("ipv6_address") if self.ipv6 else None
        router = self._endpoint(host, router=True)
        host.run(["ip", "-4", "route", "replace", "default", "via", router["ipv4_address"],
                  "dev", host.ifname])
        if self.ipv6:
            host.run(["ip", "-6", "route", "replace", "default", "via",
                      router["ipv6_address"], "dev", host.ifname])

    def _ruleset(self) -> str:
        sources: list[tuple[str, str, str]] = []
        for host in self._docker_hosts():
            if host.nat and self.ipv4:
                sources.append(("ip", str(host.subnet4), host.router_ifname))
            if host.nat and self.ipv6:
                sources.append(("ip6", str(host.subnet6), host.router_ifname))
        return router_ruleset(self.table, sources)

    def _router(self) -> DockerHost:
        if self.router is None or not self.router.pid:
            raise TopologyError("the router container is not running")
        return self.router

    def _nft(self, script: str) -> None:
        router = self._router()
        run(nsenter(router.pid, container_argv(["nft", "-f", "-"]), workdir=router.workdir),
            input_text=script)

    # -- changing -----------------------------------------------------------------------------

    def set_conntrack_udp_timeout(self, seconds: int) -> None:
        for key in ("net.netfilter.nf_conntrack_udp_timeout",
                    "net.netfilter.nf_conntrack_udp_timeout_stream"):
            try:  # /proc/sys is read-only in a container: the host's sysctl in its netns
                self._router()
                assert self.router_view is not None
                self.router_view.run(["sysctl", "-q", "-w", f"{key}={seconds}"])
            except CommandError as exc:
                raise TopologyError(f"cannot set {key} in the router: {exc}") from exc

    def roam(self, name: str) -> Host:
        """Reconnect the host's container to its network with the next address."""
        host = self._docker_host(name)
        api = self._client.api
        host.host_part += 1
        try:
            api.disconnect_container_from_network(host.container, host.network, force=True)
            api.connect_container_to_network(host.container, host.network,
                                             **self._endpoint(host))
        except Exception as exc:
            raise TopologyError(f"cannot reconnect {host.container}: {exc}") from exc
        self._configure_host(host)
        return host

    def shape(self, name: str, *, rate: str | None = None, loss_percent: int = 0) -> None:
        host = self.host(name)
        router = self._router()
        for where, dev in ((host, host.ifname), (router, host.router_ifname)):
            if rate:
                where.run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                           "burst", "64kb", "latency", "200ms"])
            else:
                where.run(["tc", "qdisc", "del", "dev", dev, "root"], check=False)
        self._loss[host.router_ifname] = loss_percent
        self._nft(loss_rules(self.table, self._loss))

    def block(self, name: str, blocked: bool = True) -> None:
        host = self.host(name)
        verb = "add" if blocked else "delete"
        self._router().run(["nft", verb, "element", "inet", self.table, "blocked",
                            f'{{ "{host.router_ifname}" }}'])

    # -- teardown -----------------------------------------------------------------------------

    def down(self) -> list[str]:
        # a SIGTERM/SIGINT arriving half-way would leave containers behind: hold such signals
        # until everything is removed (they are delivered right after)
        held = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            return self._down()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _down(self) -> list[str]:
        problems: list[str] = []
        everyone = [*self.hosts.values(), *([self.router] if self.router else [])]
        for host in everyone:
            for proc in host.background:
                proc.stop(grace=2.0)
            capture = host.capture_point()[0]
            for proc in capture.background:
                proc.stop(grace=2.0)
        if self._client is not None:
            problems += remove_resources(self._client, self.prefix, self._containers,
                                         self._networks)
        self._containers.clear()
        self._networks.clear()
        for host in everyone:
            if isinstance(host, DockerHost):
                host.pid = 0
        registry_files.release(self.prefix)
        return problems


def remove_resources(client: Any, prefix: str, containers: Sequence[str] = (),
                     networks: Sequence[str] = ()) -> list[str]:
    """Remove the named containers and networks and anything else labelled with ``prefix``."""
    problems: list[str] = []
    api = client.api
    filters = {"label": f"{labels.RUN_LABEL}={prefix}"}
    names = set(containers)
    with contextlib.suppress(Exception):
        names |= {c["Names"][0].lstrip("/") for c in api.containers(all=True, filters=filters)}
    for name in sorted(names):
        try:
            api.remove_container(name, force=True, v=True)
        except Exception as exc:
            if "No such container" not in str(exc) and "404" not in str(exc):
                problems.append(f"container {name}: {exc}")
    nets = set(networks)
    with contextlib.suppress(Exception):
        nets |= {n["Name"] for n in api.networks(filters=filters)}
    for name in sorted(nets):
        try:
            api.remove_network(name)
        except Exception as exc:
            if "not found" not in str(exc) and "404" not in str(exc):
                problems.append(f"network {name}: {exc}")
    return problems
