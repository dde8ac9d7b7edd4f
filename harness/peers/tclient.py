"""Driver for wgref's transparent client (``wgref client``, client role only).

The transparent client has no interface: it intercepts the host's own packets with nftables +
NFQUEUE, rewrites their source to the ``[Interface] Address`` and sends them through its own
UDP socket. The driver

* writes the interface configuration as a wg-quick file (no ``AllowedApps``: every
  application's flows to the peer's allowed-ips are tunnelled, so a flow that bypassed the
  tunnel would not arrive and a passing echo proves the tunnel carried it);
* gives the client host a route for each tunnelled prefix the host cannot route yet. The
  client adds no route and no address, so it only sees packets the kernel could route: in an
  IPv6-only topology the host has no IPv4 route to 198.19.77.1 (and in an IPv4-only one no
  IPv6 route to fd77::1). For such a family the driver puts the topology's own address plan
  on the host's link (198.18.i.2/24 or 2001:db8:i::2/64) and an on-link route to the prefix.
  Nothing leaves the host unencrypted through them: the client's output hook takes every
  packet of every flow before neighbour resolution;
* starts ``python -m wgref.client CONF --foreground --socket PATH`` in the host's namespace,
  reads its state from the status socket (one JSON document per connection, what
  ``wgref client --status --json`` prints) and stops it with SIGTERM, then ``--cleanup``.

What it cannot do: answer a handshake (it is a client only), accept flows that the server
starts (packets from the tunnel that answer no flow of the host are dropped: server -> client
steps are skipped), change anything at run time (no UAPI, no listen-port change), send from
a second tunnel address (every flow gets the first Address of its family), write a key log,
or refuse an over-MTU packet with DF at the sender as an interface of that MTU would (it has
no interface: an IPv4 packet with DF over the MTU gets "fragmentation needed" back, as from a
router on the path; the host's own IPv6 is fragmented; TCP has its MSS clamped).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import ipaddress
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..secrets import write_secret
from ..shell import Background, CommandError, run
from ..topology import Host, v4_address, v6_address
from ..wgdump import DeviceState, PeerState
from .base import DriverError, InterfaceConfig, PeerDriver, PeerInstance, Unsupported

NAME = "wgref-client"
STATUS_DIR = Path("/run/wgref")
START_TIMEOUT = 20.0
STATUS_TIMEOUT = 5.0



def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _python_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{_repo_root()}:{path}" if path else _repo_root()}


def client_command(*args: str) -> list[str]:
    """``python -m wgref.client ARGS`` with this Python (and the repository importable)."""
    env = [f"{k}={v}" for k, v in _python_env().items()]
    return ["env", *env, sys.executable, "-m", "wgref.client", *args]


def query_status(path: Path, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """The client's status document: its socket answers one JSON document per connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    document = json.loads(b"".join(chunks))
    if not isinstance(document, dict):
        raise ValueError("the status is not a JSON object")
    return document


def _endpoint(text: str | None) -> str | None:
    """``host:port`` as `wg show dump` writes it (IPv6 in brackets)."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def state_from_status(doc: dict[str, Any], config: InterfaceConfig,
                      public_key: str) -> DeviceState:
    """Map the status document to `wg show dump`'s fields. The status has no absolute
    handshake time (only ``handshake_age``), no preshared key and no persistent keepalive:
    the time is now minus the age, the other two come from the configuration."""
    peer = config.peers[0]
    age = doc.get("handshake_age")
    latest = 0 if age is None else round(time.time() - float(age))
    state = PeerState(
        public_key=str(doc.get("peer") or peer.public_key),
        preshared_key=peer.preshared_key,
        endpoint=_endpoint(doc.get("endpoint")),
        allowed_ips=tuple(str(n) for n in doc.get("allowed_ips", ())),
        latest_handshake=latest,
        rx_bytes=int(doc.get("rx_bytes", 0)),
        tx_bytes=int(doc.get("tx_bytes", 0)),
        persistent_keepalive=peer.persistent_keepalive,
    )
    return DeviceState(public_key, int(doc.get("listen_port") or 0), "off",
                       {state.public_key: state})


def _public_key(private: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                            ).decode()


class TransparentClientInstance(PeerInstance):
    def __init__(self, driver: PeerDriver, host: Host, config: InterfaceConfig, folder: Path,
                 proc: Background, socket_path: Path) -> None:
        self.driver = driver
        self.host = host
        self.config = config
        self.folder = folder
        self.proc = proc
        self.socket_path = socket_path
        self.public_key = _public_key(config.private_key)
        self._latest = 0
        self._stopped = False

    @property
    def inbound(self) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        try:
            return query_status(self.socket_path)
        except (OSError, ValueError) as exc:
            raise DriverError(f"{NAME}: cannot read the status socket {self.socket_path}: "
                              f"{exc}") from exc

    def state(self) -> DeviceState:
        state = state_from_status(self.status(), self.config, self.public_key)
        peer = state.only_peer()
        if peer is not None and peer.latest_handshake:
            # now - age jitters by a second between reads: keep the value for one handshake
            if self._latest and abs(peer.latest_handshake - self._latest) <= 2:
                latest = self._latest
            else:
                latest = self._latest = peer.latest_handshake
            fixed = PeerState(peer.public_key, peer.preshared_key, peer.endpoint,
                              peer.allowed_ips, latest, peer.rx_bytes, peer.tx_bytes,
                              peer.persistent_keepalive)
            state = DeviceState(state.public_key, state.listen_port, state.fwmark,
                                {fixed.public_key: fixed})
        return state

    def logs(self) -> list[Path]:
        return [self.proc.log]

    def problem(self) -> str | None:
        if self.proc.alive():
            return None
        return (f"{NAME} exited with status {self.proc.proc.returncode}; "
                f"log tail: {self.proc.log_tail(300)}")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.proc.stop(grace=5.0)
        # what a crash or kill -9 may have left (the tables of this namespace)
        result = self.host.run(client_command("--cleanup"), timeout=20, check=False)
        with self.proc.log.open("a") as out:
            out.write(f"# wgref client --cleanup -> {result.returncode}: "
                      f"{(result.stdout + result.stderr).strip()}\n")
        self.socket_path.unlink(missing_ok=True)


class TransparentClientDriver(PeerDriver):
    """``wgref client`` in the client role (see the module docstring)."""

    def __init__(self, allowed_apps: tuple[str, ...] = ()) -> None:
        self.name = NAME
        self.allowed_apps = allowed_apps
        self._version: str | None = None

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("wgref") is None or importlib.util.find_spec(
                "wgref.client") is None:
            return "wgref.client (the transparent client) is not importable in this Python"
        if os.geteuid() != 0:
            return "the transparent client needs root (nftables, NFQUEUE, raw sockets)"
        if shutil.which("nft") is None:
            return "nft is not installed"
        return None

    def version(self) -> str:
        if self._version is None:
            result = run(client_command("--version"), check=False, timeout=15)
            lines = (result.stdout or result.stderr).strip().splitlines()
            self._version = f"{lines[0]} (transparent client)" if lines else "unknown"
        return self._version

    def conf_text(self, config: InterfaceConfig) -> str:
        """The wg-quick file; AllowedApps (in [Peer], WireSock's comment form) only when the
        driver was made with an application list."""
        text = config.quick_conf()
        if self.allowed_apps:
            text += f"#@ws:AllowedApps = {', '.join(self.allowed_apps)}\n"
        return text

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        if len(config.peers) != 1:
            raise Unsupported(f"{NAME} takes exactly one [Peer] ({len(config.peers)} given)")
        for version in (4, 6):
            extra = [a for a in config.addresses
                     if ipaddress.ip_interface(a).version == version][1:]
            if extra:
                raise Unsupported(
                    f"{NAME} sources every tunnelled flow from its first IPv{version} "
                    f"Address, so it cannot send from {', '.join(extra)}")
        folder.mkdir(parents=True, exist_ok=True)
        self._prepare_host(host, config)
        conf = write_secret(folder / f"{config.ifname}.conf", self.conf_text(config),
                            runtime=True)
        STATUS_DIR.mkdir(parents=True, exist_ok=True)
        sock = STATUS_DIR / f"harness-{config.ifname}.sock"
        log = folder / f"{host.name}-{self.name}.log"
        proc = host.spawn(self.name, client_command(str(conf), "--foreground", "--socket",
                                                    str(sock)), log,
                          env={"LOG_LEVEL": config.log_level})
        instance = TransparentClientInstance(self, host, config, folder, proc, sock)
        try:
            self._wait_ready(instance)
        except DriverError as exc:
            instance.stop()
            raise DriverError(f"{self.name} on {host.name}: {exc}") from exc
        return instance

    @staticmethod
    def _prepare_host(host: Host, config: InterfaceConfig) -> None:
        """An address and on-link routes for the peer's allowed-ips in each family the host
        has no outer address of (so the kernel can route, and the client intercept, them)."""
        prefixes = [ipaddress.ip_network(p, strict=False) for p in config.peers[0].allowed_ips]
        try:
            for version, have, address in ((4, host.v4, f"{v4_address(host.index, 2)}/24"),
                                           (6, host.v6, f"{v6_address(host.index, 2)}/64")):
                wanted = [p for p in prefixes if p.version == version]
                if have is not None or not wanted:
                    continue
                extra = ["nodad"] if version == 6 else []
                host.run(["ip", "addr", "add", address, "dev", host.ifname, *extra])
                for prefix in wanted:
                    host.run(["ip", f"-{version}", "route", "add", str(prefix), "dev",
                              host.ifname])
        except CommandError as exc:
            raise DriverError(f"{NAME}: cannot give {host.name} routes to the tunnelled "
                              f"prefixes: {exc}") from exc

    def _wait_ready(self, instance: TransparentClientInstance) -> None:
        """Up when the status socket answers (the run loop answers it; "client up" is only
        logged at LOG_LEVEL info and below)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not instance.proc.alive():
                raise DriverError(f"exited at start ({instance.proc.proc.returncode}): "
                                  f"{instance.proc.log_tail()}")
            if instance.socket_path.exists():
                with contextlib.suppress(OSError, ValueError):
                    query_status(instance.socket_path, timeout=1.0)
                    return
            time.sleep(0.1)
        raise DriverError(f"no answer on {instance.socket_path} after {START_TIMEOUT:g} s: "
                          f"{instance.proc.log_tail()}")


def wgref_client() -> TransparentClientDriver:
    """The driver with its capabilities and limitations (from harness/peers/spec.py)."""
    from .spec import peer

    driver = peer(NAME).driver()
    assert isinstance(driver, TransparentClientDriver)
    return driver
