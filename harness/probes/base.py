"""What a probe is, the context it runs in, and how it reports (pass: returns a detail;
fail: :class:`ProbeFailed` with the observed behaviour; unsupported: :class:`ProbeUnsupported`;
the baseline never worked: :class:`ProbeError`)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..peers.base import PeerInstance
from ..results import FAIL, PASS, StepResult
from ..shell import Background
from ..topology import Topology
from .client import HandshakeFailed, ProbeClient
from .craft import CLIENT_INNER, LISTEN_PORT, Session, parse_inner_udp
from .oracle import Oracle
from .wire import Wire

DELIVERY_TIMEOUT = 2.0
QUIET = 1.0  # how long "no reply" is watched for


class ProbeFailed(Exception):
    """The server deviated; the message says what was observed."""


class ProbeUnsupported(Exception):
    """The server (or its driver) cannot take this probe; the message says why."""


class ProbeError(Exception):
    """The probe could not get to what it tests (a baseline step failed)."""


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    sends: str  # what the probe sends
    requirement: str  # what must happen
    section: str  # whitepaper section (and kernel reference)
    run: Callable[[ProbeContext], str]
    needs: tuple[str, ...] = ()  # server capabilities beyond "responder"
    config: tuple[str, ...] = ()  # server configuration it relies on ("allowed-ips")
    delivery: bool = False  # needs an oracle for packets delivered to the server's tunnel
    attacker: bool = False  # a third host
    slow: bool = False
    timeout: float = 45.0
    server_knows_endpoint: bool = False  # the server is configured with the probe's address
    log_level: str = "debug"
    exclusive: bool = False  # timing-sensitive: with --jobs it runs alone on the machine


@dataclass
class ProbeContext:
    probe: Probe
    topology: Topology
    server: PeerInstance
    client: ProbeClient
    folder: Path
    oracle: Oracle | None = None
    attacker: Wire | None = None
    deadline: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)
    on_step: Callable[[StepResult], None] | None = None
    background: dict[str, Background] = field(default_factory=dict)  # stopped by the runner
    accepted: set[int] = field(default_factory=set)  # tags the server may echo (mitm)
    _tag: int = 20000
    _failures: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)

    # -- reporting ------------------------------------------------------------------------

    def _step(self, label: str, status: str, detail: str) -> None:
        now = time.monotonic()
        step = StepResult(len(self.steps) + 1, label, self.probe.name, status, detail,
                          round(now - self._started, 2))
        self._started = now
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def info(self, label: str, detail: str) -> None:
        self._step(label, PASS, detail)

    def check(self, label: str, ok: bool, observed: str) -> str:
        """Record a check; a failed one ends the probe with ``observed``."""
        self._step(label, PASS if ok else FAIL, observed)
        if not ok:
            raise ProbeFailed(f"{label}: {observed}")
        return observed

    def soft_check(self, label: str, ok: bool, observed: str) -> bool:
        """Record a check; a failure is kept for :meth:`settle` and the probe goes on."""
        self._step(label, PASS if ok else FAIL, observed)
        if not ok:
            self._failures.append(f"{label}: {observed}")
        return ok

    def settle(self) -> None:
        """End the probe with every failure :meth:`soft_check` kept, if any."""
        if self._failures:
            raise ProbeFailed("; ".join(self._failures))

    def measure(self, key: str, value: float) -> None:
        self.measurements[key] = round(float(value), 4)

    # -- helpers --------------------------------------------------------------------------

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def tag(self) -> int:
        """A fresh inner UDP source port: the tag of one probe packet."""
        self._tag += 1
        return self._tag

    @property
    def probe_public(self) -> str:
        return base64.b64encode(self.client.initiator.static_public).decode()

    def session(self, label: str = "baseline handshake") -> Session:
        try:
            session, rtt = self.client.handshake()
        except HandshakeFailed as exc:
            raise ProbeError(str(exc)) from None
        self.measure("handshake_rtt_ms", rtt * 1000)
        self.info(label, f"valid initiation answered in {rtt * 1000:.1f} ms")
        return session

    def need_oracle(self) -> Oracle:
        if self.oracle is None:
            raise ProbeUnsupported(f"{self.server.driver.name}: no way to see what it delivers")
        return self.oracle

    def send_data(self, session: Session, *, src: str = CLIENT_INNER,
                  counter: int | None = None, wire: Wire | None = None) -> tuple[int, bytes]:
        """Send one tagged inner UDP packet; returns (tag, datagram)."""
        tag = self.tag()
        data = ProbeClient.data(session, tag, src=src, counter=counter)
        self.client.send(data, wire)
        return tag, data

    def delivered(self, tag: int, *, src: str = CLIENT_INNER,
                  timeout: float = DELIVERY_TIMEOUT) -> int:
        count = self.need_oracle().wait(src, tag, min(timeout, self.remaining()))
        if count:
            self.accepted.add(tag)
        return count

    def not_delivered(self, tag: int, *, src: str = CLIENT_INNER,
                      wait: float = 0.3) -> int:
        """How often ``tag`` was delivered, read ``wait`` seconds from now (call it after
        a control packet sent later was seen delivered)."""
        time.sleep(min(wait, self.remaining()))
        return self.need_oracle().count(src, tag)

    def confirmed_session(self) -> Session:
        """A handshake, confirmed by one data packet the server delivers (the responder
        only starts using its keypair after the initiator's first data, WP 5.4.5)."""
        session = self.session()
        tag, _ = self.send_data(session)
        count = self.delivered(tag)
        if count != 1:
            raise ProbeError(f"the first data packet after the handshake was delivered "
                             f"{count} times (expected once)")
        self.info("session confirmed", f"data packet {tag} delivered")
        return session

    def endpoint(self) -> str | None:
        """The server's endpoint for the probe's peer (`wg show`)."""
        state = self.server.state()
        if state is None:
            raise ProbeUnsupported(f"{self.server.driver.name} cannot report endpoints")
        peer = state.peers.get(self.probe_public)
        return peer.endpoint if peer else None

    def replies(self, session: Session | None = None, seconds: float = QUIET) -> list[str]:
        """What the server sent the probe within ``seconds``, described; echoes of packets
        it delivered (mitmproxy-wireguard echoes every datagram) do not count."""
        out = []
        for record in self.client.wire.collect(min(seconds, self.remaining())):
            plain = session.open(record.data) if session is not None else None
            if plain is None:
                out.append(record.describe())
                continue
            inner = parse_inner_udp(plain)
            if inner and inner.sport == LISTEN_PORT and inner.dport in self.accepted:
                continue
            out.append(record.describe() + (" (keepalive)" if not plain else
                                            f" carrying {len(plain)} B"))
        return out
