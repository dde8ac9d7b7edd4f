"""Every probe, in matrix order."""

from __future__ import annotations

from . import handshake, load, roaming, timers, transport
from .base import Probe

PROBES: list[Probe] = [
    *handshake.PROBES, *transport.PROBES, *roaming.PROBES, *load.PROBES, *timers.PROBES,
]


def select(names: list[str], slow: bool) -> list[Probe]:
    """The named probes (all non-slow ones, plus slow ones with ``slow``, when none are
    named); raises ValueError for an unknown name."""
    if not names:
        return [p for p in PROBES if slow or not p.slow]
    by_name = {p.name: p for p in PROBES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown probe {', '.join(unknown)} (known: {', '.join(by_name)})")
    return [by_name[n] for n in names]
