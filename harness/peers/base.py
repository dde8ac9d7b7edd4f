"""What every peer driver offers: its capabilities, an interface configuration, and a running
instance that the scenario runner can reconfigure, read state from and stop."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from ..topology import Host
from ..traffic import TrafficResult, echo_check
from ..wgdump import DeviceState

CAPABILITIES = (
    "initiator",  # can start a handshake (it sends the first packet)
    "responder",  # can answer a handshake
    "psk",  # preshared keys
    "ipv6-outer",  # IPv6 endpoints
    "ipv6-inner",  # IPv6 inside the tunnel
    "keepalive",  # persistent keepalive
    "roaming",  # survives its own outer address change (or follows the peer's)
    "icmp",  # a real interface: ping works through it
    "icmp-errors",  # answers a packet no peer takes with ICMP unreachable (device.c wg_xmit)
    "state",  # `wg show dump`-like state (handshake time, endpoint, counters)
    "reconfigure",  # runtime changes (wg set) after start
    "mtu",  # the interface MTU can be set
    "keylog",  # writes a Wireshark key log
    "cookie",  # answers with cookie replies under load
)


class DriverError(RuntimeError):
    """A peer could not be started, configured or read."""


class Unsupported(Exception):
    """The driver cannot take part here; the message says why."""


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One [Peer] of an interface configuration."""

    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None  # "host:port" / "[v6]:port"
    preshared_key: str | None = None
    persistent_keepalive: int = 0


@dataclass(slots=True)
class InterfaceConfig:
    """What the harness asks a driver to bring up."""

    ifname: str
    private_key: str
    addresses: tuple[str, ...]  # inner, with prefix length
    listen_port: int | None = None
    mtu: int = 1420
    peers: list[PeerEntry] = field(default_factory=list)
    log_level: str = "debug"  # LOG_LEVEL for implementations that read it

    def wg_conf(self) -> str:
        """The configuration in `wg setconf` format (no wg-quick keys)."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}"]
        if self.listen_port is not None:
            lines.append(f"ListenPort = {self.listen_port}")
        for peer in self.peers:
            lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
            if peer.preshared_key:
                lines.append(f"PresharedKey = {peer.preshared_key}")
            if peer.endpoint:
                lines.append(f"Endpoint = {peer.endpoint}")
            lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
            if peer.persistent_keepalive:
                lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
        return "\n".join(lines) + "\n"

    def quick_conf(self) -> str:
        """The configuration in wg-quick format (Address and MTU added, never DNS)."""
        conf = self.wg_conf().split("\n")
        extra = [f"Address = {', '.join(self.addresses)}", f"MTU = {self.mtu}"]
        return "\n".join(conf[:2] + extra + conf[2:])


class PeerInstance(abc.ABC):
    """A running peer inside a host namespace."""

    driver: PeerDriver
    host: Host
    config: InterfaceConfig
    folder: Path

    @property
    def netdev(self) -> bool:
        """True when the peer has a real interface in its namespace (host tools work)."""
        return True

    @property
    def builtin_echo(self) -> bool:
        """True when the peer itself echoes TCP/UDP on every inner port (no echo server
        needs to run in its namespace)."""
        return False

    @property
    def inbound(self) -> bool:
        """False when traffic that the other peer starts cannot reach this one (a transparent
        client drops packets from the tunnel that answer none of its host's flows): steps
        towards it are skipped."""
        return True

    def echo_check(self, proto: str, dst: str, *, port: int, size: int, count: int,
                   timeout: float) -> TrafficResult:
        """A TCP or UDP echo round trip through the tunnel, from this peer."""
        return echo_check(self.host, proto, dst, port=port, size=size, count=count,
                          timeout=timeout)

    @abc.abstractmethod
    def state(self) -> DeviceState | None:
        """The current state, or None when the driver cannot tell."""

    def set_peer(self, public_key: str, **options: str) -> None:
        """Change a peer at run time (`wg set IF peer KEY option value ...`)."""
        raise Unsupported(f"{self.driver.name} cannot be reconfigured at run time")

    def set_listen_port(self, port: int) -> None:
        raise Unsupported(f"{self.driver.name} cannot change its listen port at run time")

    def keylog(self) -> Path | None:
        return None

    def logs(self) -> list[Path]:
        return []

    @abc.abstractmethod
    def problem(self) -> str | None:
        """Why the peer is not healthy (it died, say), or None."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the peer; must be safe to call twice."""


class PeerDriver(abc.ABC):
    """A kind of WireGuard implementation the harness can run."""

    name: str = "?"
    capabilities: frozenset[str] = frozenset()
    # why capabilities are missing, for the matrix ("psk": "the wheel has no PSK API")
    limitations: dict[str, str]  # set by each driver (an instance attribute)
    # how the probes see what it delivers (peers.spec.LISTENER / HELPER_LOG), None: they cannot
    delivery: str | None = None
    # what its configuration API cannot express ({"allowed-ips": why}), for the probes
    config_limits: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """None when the driver can run here, else the reason it cannot."""

    @abc.abstractmethod
    def version(self) -> str:
        ...

    @abc.abstractmethod
    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        """Bring the interface up in the host's namespace and configure it."""

    def missing(self, needed: set[str]) -> list[str]:
        """Readable reasons for each needed capability this driver lacks."""
        out = []
        for cap in sorted(needed - self.capabilities):
            why = getattr(self, "limitations", {}).get(cap)
            out.append(f"{self.name} lacks {cap}" + (f" ({why})" if why else ""))
        return out
