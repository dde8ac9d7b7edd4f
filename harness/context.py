"""The live state of one cell while its steps run: topology, peers, keys, marks, and the
background processes (echo servers, transfers, floods) that steps start."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .peers.base import PeerInstance
from .scenario import Scenario
from .shell import Background
from .topology import Host, Topology
from .wgdump import DeviceState, PeerState

INNER_V4 = {"server": "198.19.77.1", "client": "198.19.77.2"}
INNER_V6 = {"server": "fd77::1", "client": "fd77::2"}
SERVER_PORT = 51820
POLL = 0.2


class StepFailed(Exception):
    """A step did not meet its expectation; the message is the readable reason."""


class StepSkipped(Exception):
    """A step cannot run with these peers (a missing capability); the message says why."""


@dataclass
class CellContext:
    scenario: Scenario
    topology: Topology
    folder: Path
    instances: dict[str, PeerInstance] = field(default_factory=dict)
    public_keys: dict[str, str] = field(default_factory=dict)
    marks: dict[str, PeerState | None] = field(default_factory=dict)
    background: dict[str, Background] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    deadline: float = 0.0

    def host(self, name: str) -> Host:
        return self.topology.host(name)

    def peer(self, role: str) -> PeerInstance:
        return self.instances[role]

    @staticmethod
    def other(role: str) -> str:
        return "client" if role == "server" else "server"

    def inner(self, role: str, family: int) -> str:
        return (INNER_V4 if family == 4 else INNER_V6)[role]

    def outer_family(self) -> int:
        return 6 if self.scenario.topology.outer == "ipv6" else 4

    def server_endpoint(self) -> tuple[str, int]:
        return self.host("server").address(self.outer_family()), SERVER_PORT

    def peer_state(self, role: str) -> PeerState | None:
        """The state `role` keeps about the other peer (None when the driver cannot tell or
        the peer is not configured)."""
        state: DeviceState | None = self.peer(role).state()
        if state is None:
            return None
        return state.peers.get(self.public_keys[self.other(role)])

    def stateful(self, which: str) -> list[str]:
        roles = ["client", "server"] if which in ("either", "both") else [which]
        return [r for r in roles if "state" in self.peer(r).driver.capabilities]

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait_for(self, what: str, timeout: float, probe: Callable[[], str | None]) -> str:
        """Poll ``probe`` (returns a detail string once the event happened) until timeout;
        raises StepFailed naming ``what``."""
        timeout = min(timeout, self.remaining())
        end = time.monotonic() + timeout
        while True:
            detail = probe()
            if detail is not None:
                return detail
            if time.monotonic() >= end:
                raise StepFailed(f"{what}: not seen within {timeout:.0f} s")
            time.sleep(POLL)
