"""Drivers for the BoringTun-based Python wheels, which run WireGuard over a userspace TCP/IP
stack (no interface in the namespace, so no ping and no `wg show`):

* ``mitmproxy-wireguard`` - a responder: ``start_server()`` hands every TCP connection and UDP
  datagram of its peers to Python; the helper echoes them. No preshared-key parameter.
* ``wireguard-requests`` - an initiator: ``WgTunnel(WgConfig)`` opens TCP streams and UDP
  sockets through the tunnel; each echo check runs in a fresh helper process (a new tunnel
  and handshake). It takes a preshared key, but cannot listen or answer a handshake.

The helpers (``harness.peers.mitm_helper``, ``harness.peers.requests_helper``) run with the
Python that has the wheel: this one, or ``HARNESS_WHEELS_PYTHON``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..secrets import write_secret
from ..shell import Background, run
from ..topology import Host
from ..traffic import TrafficResult, harness_python, parse_echo
from ..wgdump import DeviceState
from .base import DriverError, InterfaceConfig, PeerDriver, PeerInstance

START_TIMEOUT = 15.0


def wheels_python() -> str:
    return os.environ.get("HARNESS_WHEELS_PYTHON") or sys.executable


def _module_version(module: str, dist: str) -> str | None:
    code = (f"import importlib.metadata as m, {module}; print(m.version({dist!r}))")
    result = run([wheels_python(), "-c", code], check=False, timeout=30)
    return result.stdout.strip() if result.ok else None


def _python_cmd(module: str, *args: str) -> list[str]:
    cmd = harness_python(module, *args)
    cmd[cmd.index(sys.executable)] = wheels_python()
    return cmd


class _WheelDriver(PeerDriver):
    module = ""
    dist = ""

    def __init__(self) -> None:
        self._version: str | None = None
        self._checked = False

    def unavailable(self) -> str | None:
        if self.version() == "unavailable":
            return (f"the {self.dist} wheel is not importable by {wheels_python()} "
                    f"(pip install {self.dist}, or set HARNESS_WHEELS_PYTHON)")
        return None

    def version(self) -> str:
        if not self._checked:
            self._checked = True
            self._version = _module_version(self.module, self.dist)
        return self._version or "unavailable"


class MitmInstance(PeerInstance):
    def __init__(self, driver: PeerDriver, host: Host, config: InterfaceConfig, folder: Path,
                 proc: Background) -> None:
        self.driver, self.host, self.config, self.folder, self.proc = (
            driver, host, config, folder, proc)

    @property
    def netdev(self) -> bool:
        return False

    @property
    def builtin_echo(self) -> bool:
        return True

    def echo_check(self, proto: str, dst: str, *, port: int, size: int, count: int,
                   timeout: float) -> TrafficResult:
        return TrafficResult(False, "mitmproxy-wireguard cannot originate traffic", {})

    def state(self) -> DeviceState | None:
        return None

    def logs(self) -> list[Path]:
        return [self.proc.log]

    def problem(self) -> str | None:
        if self.proc.alive():
            return None
        return f"mitmproxy-wireguard helper exited: {self.proc.log_tail(300)}"

    def stop(self) -> None:
        self.proc.stop()


class MitmproxyWireguard(_WheelDriver):
    name = "mitmproxy-wireguard"
    module = "mitmproxy_wireguard"
    dist = "mitmproxy-wireguard"

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        if len(config.peers) != 1 or config.listen_port is None:
            raise DriverError("mitmproxy-wireguard needs one peer and a listen port")
        folder.mkdir(parents=True, exist_ok=True)
        spec = write_secret(folder / f"{host.name}-mitm.json", json.dumps({
            "private_key": config.private_key, "port": config.listen_port,
            "peers": [peer.public_key for peer in config.peers],
            "host": "::" if host.v6 and not host.v4 else "0.0.0.0",
        }), runtime=True)
        log = folder / f"{host.name}-mitmproxy-wireguard.log"
        proc = host.spawn(self.name, _python_cmd("harness.peers.mitm_helper", str(spec)), log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "listening" in proc.log_tail(2000):
                return MitmInstance(self, host, config, folder, proc)
            if not proc.alive():
                break
            time.sleep(0.1)
        proc.stop()
        raise DriverError(f"mitmproxy-wireguard did not start: {proc.log_tail()}")


class RequestsInstance(PeerInstance):
    def __init__(self, driver: PeerDriver, host: Host, config: InterfaceConfig, folder: Path,
                 spec: Path) -> None:
        self.driver, self.host, self.config, self.folder, self.spec = (
            driver, host, config, folder, spec)
        self.log = folder / f"{host.name}-wireguard-requests.log"

    @property
    def netdev(self) -> bool:
        return False

    def echo_check(self, proto: str, dst: str, *, port: int, size: int, count: int,
                   timeout: float) -> TrafficResult:
        argv = _python_cmd("harness.peers.requests_helper", str(self.spec), proto, dst,
                           str(port), "--size", str(size), "--count", str(count),
                           "--timeout", str(timeout))
        result = self.host.run(argv, timeout=timeout + 15, check=False)
        with self.log.open("a") as out:
            out.write(f"# {' '.join(argv)}\n{result.stderr}{result.stdout}\n")
        return parse_echo(result.stdout, f"{proto} echo to {dst}:{port} (wireguard-requests)")

    def state(self) -> DeviceState | None:
        return None

    def logs(self) -> list[Path]:
        return [self.log] if self.log.exists() else []

    def problem(self) -> str | None:
        return None

    def stop(self) -> None:
        return None


class WireguardRequests(_WheelDriver):
    name = "wireguard-requests"
    module = "wireguard_requests"
    dist = "wireguard-requests"

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        if len(config.peers) != 1 or not config.peers[0].endpoint:
            raise DriverError("wireguard-requests needs exactly one peer with an endpoint")
        folder.mkdir(parents=True, exist_ok=True)
        peer = config.peers[0]
        address, _, prefix = next(a for a in config.addresses if ":" not in a).partition("/")
        spec = write_secret(folder / f"{host.name}-requests.json", json.dumps({
            "private_key": config.private_key, "address": address,
            "prefix_len": int(prefix or 32), "mtu": config.mtu,
            "peer": {"public_key": peer.public_key, "endpoint": peer.endpoint,
                     "allowed_ips": list(peer.allowed_ips),
                     "preshared_key": peer.preshared_key},
        }), runtime=True)
        return RequestsInstance(self, host, config, folder, spec)
