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


def requested_only(name: str) -> PeerDriver | None:
    """Peers that join a run only when named (negative controls): ``wgref-sloppy`` and
    ``wgref-fault:NAME[+NAME]`` (harness/faults.py); None for any other name. Raises
    ValueError for an unknown fault."""
    from ..faults import driver_for
    from ..probes.sloppy import sloppy_driver

    if name == "wgref-sloppy":
        return sloppy_driver()
    return driver_for(name)


def select(drivers: list[PeerDriver], names: list[str], what: str) -> list[PeerDriver]:
    """The drivers named, in that order (matrix peers, or peers :func:`requested_only`
    makes); raises ValueError naming the unknown ones and what is known."""
    by_name = {d.name: d for d in drivers}
    for name in names:
        try:
            extra = None if name in by_name else requested_only(name)
        except ValueError as exc:
            raise ValueError(f"unknown {what} {name}: {exc}") from None
        if extra is not None:
            by_name[name] = extra
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(by_name)}, "
                         "wgref-sloppy, wgref-fault:NAME)")
    return [by_name[n] for n in names]
