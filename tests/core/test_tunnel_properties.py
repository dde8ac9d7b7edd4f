"""Property tests through the BoringTun-shaped :class:`~wgref.tunnel.Tunnel`: hostile datagrams
never raise out of ``read``, give only the documented results, and never change the tunnel's
state unless they authenticate (the same properties as tests/core/test_device_properties.py,
one layer up, with and without a caller-supplied source, loaded or not)."""

from __future__ import annotations

import ipaddress
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import hostile_bytes, may_authenticate, mutated, snapshot
from wgref import messages
from wgref.crypto import clamp, public_key
from wgref.results import Endpoint
from wgref.tunnel import (
    Done,
    Error,
    Tunnel,
    TunnResult,
    WriteToNetwork,
    WriteToTunnelV4,
    WriteToTunnelV6,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOURCES = st.sampled_from(
    [None, Endpoint("203.0.113.200", 9999), Endpoint("2001:db8::5", 1), Endpoint("peer", 0)]
)


def _udp4(src: str, dst: str, payload: bytes) -> bytes:
    return struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    ) + payload


def _drain(tunnel: Tunnel, first: TunnResult, now: float) -> list[TunnResult]:
    results = [first]
    while not isinstance(results[-1], Done | Error):
        results.append(tunnel.read(b"", now))
    return results


class Session:
    """Two Tunnels with a confirmed session, and live datagrams from A that B has not seen:
    a transport message and a fresh initiation (a twin of A with a later wall clock)."""

    def __init__(self, *, loaded: bool) -> None:
        rng = random.Random(7)
        a_key, b_key = clamp(rng.randbytes(32)), clamp(rng.randbytes(32))
        wall = [1_700_000_000.0]
        self.a = Tunnel(a_key, public_key(b_key), index=0xA1, wall_clock=lambda: wall[0])
        self.b = Tunnel(b_key, public_key(a_key), index=0xB2, wall_clock=lambda: wall[0])
        self.now = 10.0
        pending = [self.a.write(_udp4("10.0.0.1", "10.0.0.2", b"hello"), self.now)]
        towards_b = True
        while pending:
            sender, receiver = (self.a, self.b) if towards_b else (self.b, self.a)
            nxt: list[TunnResult] = []
            for result in pending:
                for r in _drain(sender, result, self.now):
                    if isinstance(r, WriteToNetwork):
                        nxt += _drain(receiver, receiver.read(r.datagram, self.now), self.now)
            pending = [r for r in nxt if isinstance(r, WriteToNetwork)]
            towards_b = not towards_b
        assert self.b.peer.keypairs.current is not None
        data = self.a.write(_udp4("10.0.0.1", "10.0.0.2", b"x" * 40), self.now)
        assert isinstance(data, WriteToNetwork)
        self.transport = data.datagram
        wall[0] += 5.0
        twin = Tunnel(a_key, public_key(b_key), index=0xA3, wall_clock=lambda: wall[0] + 5)
        initiation = twin.force_handshake(self.now)
        assert isinstance(initiation, WriteToNetwork)
        self.initiation = initiation.datagram
        if loaded:
            self.b.device.load.threshold = 1


_sessions: dict[bool, Session] = {}


def session(loaded: bool) -> Session:
    if loaded not in _sessions:
        _sessions[loaded] = Session(loaded=loaded)
    return _sessions[loaded]


def _check_results(results: list[TunnResult]) -> None:
    for result in results:
        assert isinstance(result, Done | Error | WriteToNetwork | WriteToTunnelV4 | WriteToTunnelV6)
        if isinstance(result, WriteToNetwork):
            # Only a cookie reply may answer a datagram that does not authenticate.
            assert messages.message_type(result.datagram) == messages.MESSAGE_COOKIE_REPLY


@SETTINGS
@given(
    which=st.sampled_from(["transport", "initiation"]),
    data=st.data(),
    source=SOURCES,
    loaded=st.booleans(),
)
def test_mutated_datagrams_through_tunnel(
    which: str, data: st.DataObject, source: Endpoint | None, loaded: bool
) -> None:
    s = session(loaded)
    original = s.transport if which == "transport" else s.initiation
    datagram = data.draw(mutated(original), label="datagram")
    before = snapshot(s.b.device)
    results = _drain(s.b, s.b.read(datagram, s.now, source), s.now)  # must not raise
    if may_authenticate(original, datagram):
        _sessions.pop(loaded, None)  # the state may have moved on
        return
    _check_results(results)
    assert not any(isinstance(r, WriteToTunnelV4 | WriteToTunnelV6) for r in results)
    assert snapshot(s.b.device) == before


@SETTINGS
@given(datagram=hostile_bytes(), source=SOURCES, loaded=st.booleans())
def test_random_datagrams_through_tunnel(
    datagram: bytes, source: Endpoint | None, loaded: bool
) -> None:
    s = session(loaded)
    before = snapshot(s.b.device)
    results = _drain(s.b, s.b.read(datagram, s.now, source), s.now)
    _check_results(results)
    assert not any(isinstance(r, WriteToTunnelV4 | WriteToTunnelV6) for r in results)
    assert snapshot(s.b.device) == before


def test_originals_authenticate_through_tunnel() -> None:
    """The captured datagrams are live (so the properties above are not vacuous)."""
    s = Session(loaded=False)
    delivered = s.b.read(s.transport, s.now)
    assert isinstance(delivered, WriteToTunnelV4)
    s = Session(loaded=False)
    before = snapshot(s.b.device)
    response = s.b.read(s.initiation, s.now + 1)
    assert isinstance(response, WriteToNetwork) and len(response.datagram) == 92
    assert snapshot(s.b.device) != before
