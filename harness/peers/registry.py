"""All peer drivers the harness knows, in matrix order."""

from __future__ import annotations

from pathlib import Path

from ..kernelvm.driver import KernelVMDriver
from .base import PeerDriver
from .conffile import load_conffile_drivers
from .kernel import KernelDriver
from .tclient import wgref_client
from .uapi import boringtun_cli, wgref, wireguard_go, wireguard_go_debian
from .wheels import MitmproxyWireguard, WireguardRequests


def all_drivers(conffiles: list[Path] | None = None) -> list[PeerDriver]:
    drivers: list[PeerDriver] = [
        wgref(), wireguard_go(), wireguard_go_debian(), boringtun_cli(), KernelDriver(),
        KernelVMDriver(), MitmproxyWireguard(), WireguardRequests(), wgref_client(),
    ]
    for path in conffiles or []:
        drivers += load_conffile_drivers(path)
    names = [d.name for d in drivers]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate peer names: {', '.join(sorted(dupes))}")
    return drivers
