"""A UDP socket inside a namespace that records every datagram it sends and receives
(the probe's own view of the wire; dumpcap keeps the full picture in the pcaps)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .craft import kind_name
from .netns import udp_socket

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    peer: Address  # the source of what we received, the destination of what we sent
    at: float  # time.monotonic()
    sent: bool

    def describe(self) -> str:
        arrow = "->" if self.sent else "<-"
        return f"{arrow} {self.peer[0]}:{self.peer[1]} {kind_name(self.data)} {len(self.data)} B"


@dataclass
class Wire:
    """One bound UDP socket; ``received`` holds what arrived and was not consumed yet."""

    name: str
    sock: socket.socket
    log: list[Datagram] = field(default_factory=list)
    received: list[Datagram] = field(default_factory=list)

    @classmethod
    def open(cls, name: str, ns: str, address: str, port: int = 0) -> Wire:
        return cls(name, udp_socket(ns, address, port))

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def send(self, data: bytes, destination: Address) -> Datagram:
        self.sock.sendto(data, destination)
        record = Datagram(data, destination, time.monotonic(), True)
        self.log.append(record)
        return record

    def _pump(self, timeout: float) -> bool:
        """Read whatever is readable within ``timeout``; True when something arrived."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        while True:
            try:
                data, peer = self.sock.recvfrom(65535, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except ConnectionRefusedError:  # an ICMP port unreachable for an earlier send
                continue
            record = Datagram(data, (str(peer[0]), int(peer[1])), time.monotonic(), False)
            self.log.append(record)
            self.received.append(record)

    def wait_for(self, match: Callable[[Datagram], bool], timeout: float) -> Datagram | None:
        """The first received datagram (old or new) that ``match`` accepts, consumed; None
        after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            for record in self.received:
                if match(record):
                    self.received.remove(record)
                    return record
            left = end - time.monotonic()
            if left <= 0:
                return None
            self._pump(left)

    def collect(self, seconds: float) -> list[Datagram]:
        """Everything that arrives within ``seconds`` (plus what was waiting), consumed."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._pump(left)
        out, self.received = self.received, []
        return out

    def drain(self) -> list[Datagram]:
        self._pump(0.0)
        out, self.received = self.received, []
        return out

    def close(self) -> None:
        self.sock.close()
