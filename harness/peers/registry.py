"""All peer drivers of the netns backend, in matrix order: one per ``peers.spec.PEERS`` entry,
then the config-file clients of the given TOML files."""

from __future__ import annotations

from pathlib import Path

from . import spec
from .base import PeerDriver
from .conffile import load_conffile_drivers


def all_drivers(conffiles: list[Path] | None = None) -> list[PeerDriver]:
    drivers: list[PeerDriver] = [peer.driver() for peer in spec.PEERS]
    for path in conffiles or []:
        drivers += load_conffile_drivers(path)
    names = [d.name for d in drivers]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate peer names: {', '.join(sorted(dupes))}")
    return drivers
