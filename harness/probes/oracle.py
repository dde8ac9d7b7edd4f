"""Did the server deliver a packet to its tunnel? Each probe packet is tagged by its inner
source address and UDP source port; an oracle counts deliveries of a tag.

* ``ListenerOracle``: servers with an interface; ``harness.probes.listener`` records what
  reaches the listen port on the server's side of the tunnel.
* ``LogOracle``: mitmproxy-wireguard (no interface); its helper logs every UDP datagram it
  is handed as ``udp (SRC, SPORT) -> (DST, DPORT) N bytes``.
"""

from __future__ import annotations

import abc
import json
import re
import time
from pathlib import Path

POLL = 0.05
_MITM_UDP = re.compile(r"^udp \('([^']+)', (\d+)\) -> \('[^']+', (\d+)\)")


class Oracle(abc.ABC):
    kind = "?"

    @abc.abstractmethod
    def tags(self) -> list[tuple[str, int]]:
        """Every delivery seen so far, as (inner source, source port), in order."""

    def count(self, src: str, sport: int) -> int:
        return sum(1 for tag in self.tags() if tag == (src, sport))

    def wait(self, src: str, sport: int, timeout: float, at_least: int = 1) -> int:
        """Poll until the tag was delivered ``at_least`` times or ``timeout`` passed; returns
        the count."""
        end = time.monotonic() + timeout
        while True:
            found = self.count(src, sport)
            if found >= at_least or time.monotonic() >= end:
                return found
            time.sleep(POLL)


class ListenerOracle(Oracle):
    kind = "listener"

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port

    def tags(self) -> list[tuple[str, int]]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            out.append((str(record["src"]), int(record["sport"])))
        return out


class LogOracle(Oracle):
    kind = "helper log"

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port

    def tags(self) -> list[tuple[str, int]]:
        try:
            lines = self.path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            match = _MITM_UDP.match(line)
            if match and int(match.group(3)) == self.port:
                out.append((match.group(1), int(match.group(2))))
        return out
