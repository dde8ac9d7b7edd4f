"""Timer probes: the passive keepalive (WP 6.5) and the initiator's rekey after
REKEY_AFTER_TIME (WP 6.2; slow: about two minutes). For the rekey the roles turn: the server
initiates to the probe, which answers with a wgref Device whose datagrams it relays."""

from __future__ import annotations

import ipaddress
import time

from wgref.constants import KEEPALIVE_TIMEOUT, MESSAGE_INITIATION, REKEY_AFTER_TIME
from wgref.device import Device
from wgref.results import Batch, Endpoint

from ..traffic import harness_python
from .base import Probe, ProbeContext, ProbeError
from .craft import CLIENT_INNER, SERVER_INNER, icmp_echo_reply, parse_inner_udp, udp_packet
from .wire import Datagram

KEEPALIVE_WINDOW = (KEEPALIVE_TIMEOUT - 1.0, KEEPALIVE_TIMEOUT + 3.0)
REKEY_WINDOW = (REKEY_AFTER_TIME - 1.0, REKEY_AFTER_TIME + 15.0)
TRAFFIC_PORT = 7002


def passive_keepalive(ctx: ProbeContext) -> str:
    session = ctx.session()
    sent = ctx.client.send(session.seal(icmp_echo_reply(CLIENT_INNER, SERVER_INNER)))
    ctx.info("data to the server", "an unsolicited ICMP echo reply (nothing answers it)")

    def from_session(record: Datagram) -> bool:
        return session.open(record.data) is not None

    wait = KEEPALIVE_WINDOW[1] + 7.0  # a late keepalive is still measured
    got = ctx.client.wire.wait_for(from_session, min(wait, ctx.remaining()))
    if got is None:
        return ctx.check("keepalive", False,
                         f"nothing from the server within {wait:g} s after it received data")
    delay = got.at - sent.at
    ctx.measure("keepalive_after_s", delay)
    plain = session.open(got.data) or b""
    ctx.check("the server's first packet is a keepalive", not plain,
              f"{len(plain)} bytes of data after {delay:.2f} s" if plain else
              f"empty transport message after {delay:.2f} s")
    low, high = KEEPALIVE_WINDOW
    return ctx.check(f"keepalive {low:g}-{high:g} s after the data", low <= delay <= high,
                     f"keepalive after {delay:.2f} s")


def _echo(packet: bytes) -> bytes | None:
    inner = parse_inner_udp(packet)
    if inner is None:
        return None
    return udp_packet(inner.dst, inner.src, inner.dport, inner.sport, inner.payload)


def rekey_after_time(ctx: ProbeContext) -> str:
    """The probe answers as a wgref Device; the server sends a datagram a second (and gets
    each echoed), so it keeps sending on its session until it must rekey."""
    device = Device(ctx.client.initiator.static_private)
    device.add_peer(ctx.client.initiator.server_public,
                    allowed_ips=[ipaddress.ip_network(f"{SERVER_INNER}/32")])
    server = ctx.topology.host("server")
    seconds = REKEY_WINDOW[1] + 10.0
    ctx.background["traffic"] = server.spawn(
        "traffic", harness_python("harness.probes.listener", "send", CLIENT_INNER,
                                  str(TRAFFIC_PORT), "--seconds", str(seconds)),
        ctx.folder / "server-traffic.log")
    wire = ctx.client.wire
    initiations: list[float] = []
    first_session = None
    delivered = 0
    started = time.monotonic()
    while ctx.remaining() > 0:
        now = time.monotonic()
        due = device.next_timer()
        out = Batch()
        if due is not None and due <= now:
            device.handle_timers(now, out)
        wait = 0.2 if due is None else max(0.0, min(0.2, due - now))
        for record in wire.collect(wait):
            if record.data[:1] == bytes([MESSAGE_INITIATION]):
                initiations.append(record.at)
                if first_session is None:
                    first_session = record.at
                    ctx.info("server initiated", "first handshake initiation from the server")
            device.receive_datagrams([record.data], [Endpoint(*record.peer)], record.at, out)
        while out:
            for destination, datagrams in out.sends:
                for data in datagrams:
                    wire.send(data, destination.address)
            replies = []
            for inner in out.packets:
                delivered += 1
                reply = _echo(inner)
                if reply is not None:
                    replies.append(reply)
            out = Batch()
            device.send_packets(replies, time.monotonic(), out)
        later = [t - first_session for t in initiations if first_session is not None
                 and t - first_session > 30.0]
        if later:
            break
        if first_session is None and time.monotonic() - started > 20.0:
            raise ProbeError("the server never initiated a handshake (20 s of traffic)")
    ctx.measure("datagrams_delivered_to_probe", delivered)
    ctx.measure("initiations", len(initiations))
    if first_session is None:
        raise ProbeError("the server never initiated a handshake")
    later = [t - first_session for t in initiations if t - first_session > 30.0]
    if not later:
        return ctx.check("rekey", False, f"no new initiation within {seconds:.0f} s of "
                         f"sending ({delivered} datagrams delivered to the probe)")
    ctx.measure("rekey_after_s", later[0])
    low, high = REKEY_WINDOW
    return ctx.check(f"new initiation {low:g}-{high:g} s after the first", low <= later[0] <= high,
                     f"the server initiated again after {later[0]:.1f} s of sending")


PROBES = [
    Probe("passive-keepalive",
          "a handshake, then one data packet that nothing answers (an ICMP echo reply)",
          f"about {KEEPALIVE_TIMEOUT:g} s later the server sends a keepalive (an empty "
          f"transport message), between {KEEPALIVE_WINDOW[0]:g} and "
          f"{KEEPALIVE_WINDOW[1]:g} s",
          "WP 6.5 (passive keepalive, Keepalive-Timeout)", passive_keepalive, timeout=30.0),
    Probe("rekey-after-time",
          "the server is given the probe's endpoint and sends a datagram a second; the "
          "probe answers its handshake (a wgref Device) and echoes each datagram",
          f"the server (the initiator) starts a new handshake {REKEY_AFTER_TIME:g} s after "
          f"the first (between {REKEY_WINDOW[0]:g} and {REKEY_WINDOW[1]:g} s)",
          "WP 6.2 (Rekey-After-Time), 6.1", rekey_after_time, needs=("initiator",),
          slow=True, timeout=REKEY_WINDOW[1] + 40.0, server_knows_endpoint=True),
]
