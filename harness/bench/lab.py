"""One pair brought up for the bench: the harness topology (client host and server host, each
with a veth to the router namespace) and, unless it is the raw path, a WireGuard peer on each
host with the tunnel checked end to end.

Path of every packet: client netns -> veth -> router netns (kernel forwarding) -> veth ->
server netns. The raw pair sends iperf3 over exactly that path with no tunnel (MTU 1500) and
is the ceiling; the tunnel pairs send to the server's inner address (MTU 1420)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import keys, naming
from ..context import INNER_V4, SERVER_PORT
from ..peers.base import (
    DriverError,
    InterfaceConfig,
    PeerDriver,
    PeerEntry,
    PeerInstance,
    Unsupported,
)
from ..shell import Background, CommandError
from ..topology import Host, Topology, TopologyError
from ..traffic import ping
from .cpu import session_cpu_seconds
from .iperf import PORT, load_json, server_argv
from .model import PairSpec

TOPOLOGY = ("harness topology: client netns -veth- router netns -veth- server netns (IPv4, "
            "kernel forwarding in the router); tunnel pairs: MTU 1420 to the server's inner "
            "address; raw veth: the same path with no tunnel, MTU 1500")
HANDSHAKE_TIMEOUT = 15.0
SERVER_READY_TIMEOUT = 5.0


class LabError(RuntimeError):
    """The pair could not be brought up; the message says why."""


def peer_configs(prefix: str) -> tuple[InterfaceConfig, InterfaceConfig, str]:
    """(client, server, server endpoint) configurations for a pair in the harness topology."""
    client_kp, server_kp = keys.keypair(), keys.keypair()
    endpoint = f"198.18.2.2:{SERVER_PORT}"  # host 2 of the topology is the server
    server = InterfaceConfig(
        naming.ifname(prefix, "wgs"), server_kp.private, (f"{INNER_V4['server']}/24",),
        SERVER_PORT, 1420, [PeerEntry(client_kp.public, (f"{INNER_V4['client']}/32",))],
        log_level="error")
    client = InterfaceConfig(
        naming.ifname(prefix, "wgc"), client_kp.private, (f"{INNER_V4['client']}/24",),
        None, 1420,
        [PeerEntry(server_kp.public, (f"{INNER_V4['server']}/32",), endpoint=endpoint)],
        log_level="error")
    return client, server, endpoint


def peer_session(instance: PeerInstance) -> int | None:
    """The session id (= pid of the leader) of a peer's background process, if it has one."""
    proc = getattr(instance, "proc", None)
    if isinstance(proc, Background) and proc.alive():
        return proc.proc.pid
    return None


@dataclass
class PairLab:
    pair: PairSpec
    topology: Topology
    folder: Path
    target: str = ""  # the address iperf3 -c connects to
    instances: dict[str, PeerInstance] = field(default_factory=dict)

    @property
    def client(self) -> Host:
        return self.topology.host("client")

    @property
    def server(self) -> Host:
        return self.topology.host("server")

    def cpu(self, role: str) -> float | None:
        """CPU-seconds the role's peer processes have used so far (None: no peer process)."""
        instance = self.instances.get(role)
        session = peer_session(instance) if instance else None
        return None if session is None else session_cpu_seconds(session)

    def tunnel_bytes(self, role: str = "server") -> int | None:
        """rx + tx bytes the role's peer counted for its peer (`wg show dump`), or None."""
        instance = self.instances.get(role)
        if instance is None or "state" not in instance.driver.capabilities:
            return None
        try:
            state = instance.state()
        except (DriverError, CommandError):
            return None
        peer = state.only_peer() if state else None
        return None if peer is None else peer.rx_bytes + peer.tx_bytes

    def problem(self) -> str | None:
        for role, instance in self.instances.items():
            problem = instance.problem()
            if problem:
                return f"{role} {instance.driver.name}: {problem}"
        return None

    def start_iperf_server(self, log: Path, *, json_out: bool = False) -> Background:
        proc = self.server.spawn("iperf3-server", server_argv(json_out=json_out), log)
        wait_listening(self.server, PORT, proc)
        return proc

    def close(self) -> list[str]:
        problems: list[str] = []
        for instance in self.instances.values():
            try:
                instance.stop()
            except (DriverError, CommandError) as exc:
                problems.append(f"stopping {instance.driver.name}: {exc}")
        self.instances.clear()
        return problems + self.topology.down()


def wait_listening(host: Host, port: int, proc: Background,
                   timeout: float = SERVER_READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LabError(f"iperf3 -s exited: {proc.log_tail(300)}")
        result = host.run(["ss", "-Hltn", f"sport = :{port}"], timeout=5, check=False)
        if result.ok and result.stdout.strip():
            return
        time.sleep(0.05)
    raise LabError(f"iperf3 -s is not listening on port {port} after {timeout:g} s")


def bring_up(pair: PairSpec, drivers: dict[str, PeerDriver], folder: Path) -> PairLab:
    """Build the topology and start the peers; raises Unsupported or LabError (having torn
    down whatever it had built)."""
    prefix = naming.new_prefix()
    topology = Topology(prefix, ipv4=True, ipv6=False)
    topology.add_host("client")
    topology.add_host("server")
    folder.mkdir(parents=True, exist_ok=True)
    lab = PairLab(pair, topology, folder)
    try:
        topology.up()
        if pair.raw:
            lab.target = lab.server.address(4)
            return lab
        assert pair.client is not None and pair.server is not None
        client_cfg, server_cfg, _ = peer_configs(prefix)
        for role, name, cfg in (("server", pair.server, server_cfg),
                                ("client", pair.client, client_cfg)):
            driver = drivers[name]
            lab.instances[role] = driver.start(topology.host(role), cfg, folder)
        lab.target = INNER_V4["server"]
        if not lab.instances["server"].netdev:
            probe_without_netdev(lab)  # raises Unsupported with what iperf3 said
        wait_tunnel(lab)
        return lab
    except Unsupported:
        lab.close()
        raise
    except (TopologyError, DriverError, CommandError, LabError) as exc:
        lab.close()
        raise LabError(str(exc)) from exc
    except BaseException:
        lab.close()
        raise


def wait_tunnel(lab: PairLab) -> None:
    """Ping through the tunnel until it answers (the first ping triggers the handshake)."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        result = ping(lab.client, lab.target, count=1, timeout=2)
        if result.ok:
            return
        last = result.detail
        problem = lab.problem()
        if problem:
            raise LabError(problem)
    raise LabError(f"no answer through the tunnel within {HANDSHAKE_TIMEOUT:g} s ({last})")


def probe_without_netdev(lab: PairLab) -> None:
    """A responder without an interface (mitmproxy-wireguard: a userspace TCP/IP stack that
    hands each stream to Python, which the harness echoes) has nowhere to run `iperf3 -s`
    behind it. Try iperf3 against it anyway, bounded, and report what happened."""
    server = lab.instances["server"]
    echo = lab.instances["client"].echo_check("tcp", lab.target, port=PORT, size=4096,
                                              count=1, timeout=10)
    result = lab.client.run(["iperf3", "-c", lab.target, "-p", str(PORT), "-t", "1", "-J",
                             "--connect-timeout", "3000"], timeout=15, check=False)
    try:
        said = str(load_json(result.stdout).get("error") or "no error, but no server either")
    except ValueError:
        said = result.describe()
    reason = (f"{server.driver.name} has no network interface: its userspace TCP/IP stack "
              f"terminates every stream and hands it to Python (the harness echoes it), so "
              f"no `iperf3 -s` can run behind it; tried anyway: the tunnel "
              f"{'works' if echo.ok else 'did not echo'} ({echo.detail}), iperf3 -c said "
              f"{said!r}")
    (lab.folder / "iperf3-probe.log").write_text(
        f"# {' '.join(result.argv)} -> {result.returncode}\n{result.stdout}{result.stderr}\n")
    raise Unsupported(reason)
