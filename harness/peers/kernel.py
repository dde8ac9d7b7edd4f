"""The Linux kernel's WireGuard (`ip link add type wireguard`), when the kernel has it."""

from __future__ import annotations

import os
from pathlib import Path

from .. import naming
from ..shell import CommandError, run
from ..topology import Host, remove_namespace
from ..wgdump import DeviceState
from .base import DriverError, InterfaceConfig, PeerDriver, PeerInstance
from .uapi import configure_netdev, wg_set_peer, wg_setconf, wg_state


def probe_kernel_wireguard(prefix: str | None = None) -> str | None:
    """None when `ip link add type wireguard` works (tried in a scratch namespace), else
    the kernel's answer."""
    ns = naming.namespace(prefix or naming.new_prefix(), "probe")
    try:
        run(["ip", "netns", "add", ns], timeout=10)
    except CommandError as exc:
        return f"cannot create a scratch namespace to probe: {exc}"
    try:
        result = run(["ip", "link", "add", "wgprobe", "type", "wireguard"], ns=ns, check=False)
        if result.ok:
            return None
        return ("the kernel has no WireGuard: `ip link add type wireguard` said "
                f"{result.stderr.strip() or result.stdout.strip()!r}")
    finally:
        remove_namespace(ns)


class KernelInstance(PeerInstance):
    def __init__(self, driver: PeerDriver, host: Host, config: InterfaceConfig,
                 folder: Path) -> None:
        self.driver, self.host, self.config, self.folder = driver, host, config, folder

    def state(self) -> DeviceState:
        return wg_state(self.host, self.config.ifname)

    def set_peer(self, public_key: str, **options: str) -> None:
        wg_set_peer(self.host, self.config.ifname, self.folder, public_key, options)

    def set_listen_port(self, port: int) -> None:
        self.host.run(["wg", "set", self.config.ifname, "listen-port", str(port)])

    def problem(self) -> str | None:
        return None

    def stop(self) -> None:
        self.host.run(["ip", "link", "del", self.config.ifname], check=False)


class KernelDriver(PeerDriver):
    """Capabilities and name: ``peers.spec.PEERS``."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._probed = False

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root to probe for kernel WireGuard"
        if not self._probed:
            self._probed = True
            self._reason = probe_kernel_wireguard()
        return self._reason

    def version(self) -> str:
        return f"Linux {os.uname().release}"

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            host.run(["ip", "link", "add", config.ifname, "type", "wireguard"])
            wg_setconf(host, config, folder)
            configure_netdev(host, config)
        except CommandError as exc:
            raise DriverError(f"kernel WireGuard on {host.name}: {exc}") from exc
        return KernelInstance(self, host, config, folder)
