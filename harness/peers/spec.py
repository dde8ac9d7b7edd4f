"""Every peer the harness knows, each declared once: how to start it, its capabilities (and
why the others are missing), the Docker image it runs in and the command that prints its
version there, and how the probes see what it delivers.

The netns registry (:func:`harness.peers.registry.all_drivers`), the Docker backend's drivers
and image table (:mod:`harness.docker.drivers`, :mod:`harness.docker.images`) and the probe
runner all read :data:`PEERS`; adding a peer is adding one :class:`PeerSpec` here (and, for
Docker, its ``docker/IMAGE.Dockerfile``).

    PeerSpec(
        "my-wg",                                   # the matrix name
        start=uapi("my-wg"),                       # netns: `my-wg -f IFNAME` + `wg setconf`
        capabilities=FULL,                         # what it can do (see base.CAPABILITIES)
        limitations={"keylog": "no key log"},      # why the rest is missing (the matrix shows it)
        image=DockerImage("my-wg"),                # docker/my-wg.Dockerfile
        in_container=uapi_fixed("my-wg"),          # how to start it inside that image
        version=("my-wg", "--version"),            # its version, run in the image
    )
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .base import PeerDriver

FULL = frozenset({
    "initiator", "responder", "psk", "ipv6-outer", "ipv6-inner", "keepalive", "roaming",
    "icmp", "state", "reconfigure", "mtu", "cookie",
})
NO_KEYLOG = MappingProxyType({"keylog": "no key log support"})
KERNEL_NO_KEYLOG = MappingProxyType({"keylog": "the kernel writes no key log"})

# How the probes see what a server delivered into its tunnel.
LISTENER = "listener"  # a real interface: a UDP listener in the namespace records datagrams
HELPER_LOG = "helper log"  # the peer's helper process logs every datagram it is handed

DriverFactory = Callable[["PeerSpec"], PeerDriver]


@dataclass(frozen=True, slots=True)
class DockerImage:
    """``docker/NAME.Dockerfile``, tagged ``wgref-harness/NAME:bookworm``."""

    name: str
    extra: tuple[str, ...] = ()  # work-tree paths added to the build context


ROUTER_IMAGE = DockerImage("router")


@dataclass(frozen=True, slots=True)
class PeerSpec:
    name: str
    start: DriverFactory  # the netns backend's driver
    capabilities: frozenset[str]
    limitations: Mapping[str, str] = field(default_factory=dict)
    image: DockerImage | None = None  # None: the peer cannot run on the Docker backend
    in_container: DriverFactory | None = None  # the driver inside the image (default: start)
    version: tuple[str, ...] = ()  # argv printing the version inside the image
    docker_probe: Callable[[str], str | None] | None = None  # None, or why the image cannot run
    delivery: str | None = LISTENER  # LISTENER, HELPER_LOG or None (the probes cannot tell)
    # what its configuration API cannot express ({"allowed-ips": why}): probes needing it are
    # unsupported against this peer
    config_limits: Mapping[str, str] = field(default_factory=dict)
    start_seconds: float = 1.0  # expected time to start and stop it (balances --shard)
    # --jobs slots one instance takes: most peers mostly wait; a QEMU VM keeps a core busy
    # while it boots (without KVM, for seconds)
    slots: int = 1

    def driver(self) -> PeerDriver:
        """The netns backend's driver, carrying this specification's name and capabilities."""
        return self.apply(self.start(self))

    def container_driver(self) -> PeerDriver:
        """The driver that runs inside this peer's image."""
        return self.apply((self.in_container or self.start)(self))

    def apply(self, driver: PeerDriver) -> PeerDriver:
        driver.name = self.name
        driver.capabilities = self.capabilities
        driver.limitations = dict(self.limitations)
        driver.delivery = self.delivery
        driver.config_limits = dict(self.config_limits)
        return driver


def _uapi(name: str, program: Callable[[], list[str] | None], missing: str,
          keylog: bool) -> DriverFactory:
    def make(spec: PeerSpec) -> PeerDriver:
        from .uapi import UapiDriver

        return UapiDriver(spec.name, program, keylog=keylog, missing_reason=missing)

    return make


def on_path(*programs: str, args: tuple[str, ...] = ()) -> Callable[[], list[str] | None]:
    """The first of ``programs`` found on PATH (with ``args``), or None."""

    def command() -> list[str] | None:
        for program in programs:
            path = shutil.which(program)
            if path:
                return [path, *args]
        return None

    return command


def uapi(program: str, *, args: tuple[str, ...] = (), keylog: bool = False,
         missing: str = "") -> DriverFactory:
    """A `wireguard-go IFNAME`-like program on PATH, configured over the UAPI with `wg`."""
    return _uapi(program, on_path(program, args=args),
                 missing or f"{program} is not installed (not on PATH)", keylog)


def uapi_fixed(*argv: str, keylog: bool = False) -> DriverFactory:
    """The same, with a fixed command (inside an image, where the program is known)."""
    return _uapi(argv[0], lambda: list(argv), "", keylog)


def _wgref(spec: PeerSpec) -> PeerDriver:
    from .uapi import UapiDriver, wgref_command

    return UapiDriver(spec.name, wgref_command, keylog=True, missing_reason=(
        "wgref's userspace interface (wgref.interface) is not importable in this Python: "
        "`wgref IFNAME` is not built yet or wgref is not installed"))


def _boringtun(spec: PeerSpec) -> PeerDriver:
    # boringtun drops privileges by default, after which it cannot serve the UAPI socket.
    return _uapi(spec.name, on_path("boringtun-cli", "boringtun",
                                    args=("--disable-drop-privileges",)),
                 "boringtun-cli is not installed (not on PATH)", False)(spec)


def _kernel(spec: PeerSpec) -> PeerDriver:
    from .kernel import KernelDriver

    return KernelDriver()


def _kernel_vm(spec: PeerSpec) -> PeerDriver:
    from ..kernelvm.driver import KernelVMDriver

    return KernelVMDriver()


def _mitm(spec: PeerSpec) -> PeerDriver:
    from .wheels import MitmproxyWireguard

    return MitmproxyWireguard()


def _requests(spec: PeerSpec) -> PeerDriver:
    from .wheels import WireguardRequests

    return WireguardRequests()


def _tclient(spec: PeerSpec) -> PeerDriver:
    from .tclient import TransparentClientDriver

    return TransparentClientDriver()


def _probe_docker_kernel(image: str) -> str | None:
    from ..docker.drivers import probe_kernel_wireguard

    return probe_kernel_wireguard(image)


def _wheel_version(module: str, dist: str) -> tuple[str, ...]:
    return ("python3", "-c",
            f"import importlib.metadata as m, {module}; print(m.version({dist!r}))")


WHEELS_IMAGE = DockerImage("wheels")

# In matrix order.
PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("wgref", _wgref, FULL | {"keylog", "icmp-errors"},
             image=DockerImage("wgref", ("pyproject.toml", "README.md", "wgref")),
             in_container=uapi_fixed("wgref", keylog=True), version=("wgref", "--version")),
    PeerSpec("wireguard-go", uapi("wireguard-go"), FULL, NO_KEYLOG,
             image=DockerImage("wireguard-go"), in_container=uapi_fixed("wireguard-go"),
             version=("wireguard-go", "--version")),
    PeerSpec("boringtun-cli", _boringtun, FULL, NO_KEYLOG),
    PeerSpec("kernel", _kernel, FULL | {"icmp-errors"}, KERNEL_NO_KEYLOG,
             image=DockerImage("kernel"), version=("uname", "-r"),
             docker_probe=_probe_docker_kernel),
    PeerSpec("kernel-vm", _kernel_vm, FULL | {"icmp-errors"}, KERNEL_NO_KEYLOG,
             start_seconds=15.0, slots=4),
    PeerSpec("mitmproxy-wireguard", _mitm, frozenset({"responder", "ipv6-outer"}), {
        "initiator": "start_server() only answers handshakes",
        "psk": "start_server() has no preshared-key parameter",
        "icmp": "userspace TCP/UDP stack: no interface, no ping",
        "state": "no handshake/endpoint/counter API",
        "reconfigure": "peers are fixed when the server starts",
        "keepalive": "no persistent-keepalive parameter",
        "ipv6-inner": "not exposed by the helper",
        "mtu": "no MTU parameter",
        "roaming": "cannot be observed (no state API)",
        "cookie": "cannot be observed (no state API)",
    }, image=WHEELS_IMAGE,
        version=_wheel_version("mitmproxy_wireguard", "mitmproxy-wireguard"),
        delivery=HELPER_LOG,
        config_limits={"allowed-ips": "start_server() takes only peer public keys, no "
                       "allowed-ips: there is no cryptokey routing to test (every inner source "
                       "is handed over)"}),
    PeerSpec("wireguard-requests", _requests, frozenset({"initiator", "psk", "ipv6-outer"}), {
        "responder": "WgTunnel only connects out; it cannot answer a handshake",
        "icmp": "userspace TCP/UDP stack: no interface, no ping",
        "state": "no handshake/endpoint/counter API",
        "reconfigure": "the tunnel is fixed when created",
        "keepalive": "each check is a fresh short-lived tunnel",
        "roaming": "each check is a fresh short-lived tunnel",
        "ipv6-inner": "not exposed by the helper",
        "mtu": "not exposed by the helper",
        "cookie": "cannot be observed (no state API)",
    }, image=WHEELS_IMAGE,
        version=_wheel_version("wireguard_requests", "wireguard-requests"), delivery=None),
    # the transparent client (wgref/client/): nftables + NFQUEUE, configured by a wg-quick file
    PeerSpec("wgref-client", _tclient, frozenset({
        "initiator", "psk", "ipv6-outer", "ipv6-inner", "keepalive", "icmp", "state"}), {
        "responder": "the transparent client only initiates: it never answers a handshake",
        "roaming": "not claimed: the roaming scenarios also change the listen port at run "
                   "time, which the client cannot (its UDP socket is bound once, at start)",
        "reconfigure": "configured by its wg-quick file only: no UAPI, no `wg set` at run time",
        "keylog": "the transparent client writes no key log",
        "cookie": "client only: it never answers initiations, so it never sends cookie "
                  "replies",
        "mtu": "no interface MTU: the client sees the host's packets after routing (outer "
               "link MTU), so a DF ping over its MTU gets \"fragmentation needed\" from the "
               "client rather than failing at the sender, and the scenario's server -> client "
               "pings are flows the client never started (full-size packets and TCP at MTU "
               "1420 work)",
    }),
)


def negative_control(name: str, program: Callable[[], list[str] | None]) -> PeerSpec:
    """A deliberately broken wgref (harness/faults.py, harness/probes/sloppy.py): wgref's
    capabilities and view of deliveries, no key log. Never in :data:`PEERS`: it joins a run
    only when named."""
    return PeerSpec(name, _uapi(name, program, f"{name}: wgref is not importable", False),
                    peer("wgref").capabilities - {"keylog"}, {"keylog": "a negative control"})


def peer(name: str) -> PeerSpec:
    for spec in PEERS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown peer {name} (known: {', '.join(s.name for s in PEERS)})")


def start_seconds(name: str) -> float:
    """The expected start-and-stop time of a peer (1 s for peers not declared here)."""
    return next((s.start_seconds for s in PEERS if s.name == name), 1.0)


def slots(name: str) -> int:
    """The --jobs slots one instance of a peer takes (1 for peers not declared here)."""
    return next((s.slots for s in PEERS if s.name == name), 1)


def images() -> list[DockerImage]:
    """The router's image and each peer image once, in matrix order."""
    out = [ROUTER_IMAGE]
    for spec in PEERS:
        if spec.image is not None and spec.image not in out:
            out.append(spec.image)
    return out
