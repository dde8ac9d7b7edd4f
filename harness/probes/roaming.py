"""Roaming spoof: an attacker on another host replays and forges packets; the server's
endpoint for the probe's peer (`wg show`) may follow only authenticated, new packets, and
only until the real peer's next packet (WP 6.5; compare boringtun PR #489, where the
endpoint moved before the replay check)."""

from __future__ import annotations

import os
import time

from wgref.constants import MESSAGE_INITIATION
from wgref.messages import transport_header

from .base import Probe, ProbeContext, ProbeError
from .client import ProbeClient
from .craft import cookie_reply
from .wire import Wire

SETTLE = 0.5  # time for the server to process what was just sent


def _endpoint_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wait_endpoint(ctx: ProbeContext, wanted: str, timeout: float) -> str | None:
    end = time.monotonic() + min(timeout, ctx.remaining())
    while True:
        current = ctx.endpoint()
        if current == wanted or time.monotonic() >= end:
            return current
        time.sleep(0.1)


def roaming_spoof(ctx: ProbeContext) -> str:
    attacker = ctx.attacker
    if attacker is None:
        raise ProbeError("no attacker host in the topology")
    real = _endpoint_text(ctx.client.wire.address)
    fake = _endpoint_text(attacker.address)
    session = ctx.confirmed_session()
    current = _wait_endpoint(ctx, real, 2.0)
    ctx.check("endpoint learned from the handshake", current == real,
              f"server's endpoint for the probe: {current} (probe at {real})")
    moves = 0

    def stays(label: str, send: bytes, wire: Wire = attacker) -> None:
        nonlocal moves
        ctx.client.send(send, wire)
        time.sleep(min(SETTLE, ctx.remaining()))
        now = ctx.endpoint()
        moves += now != real
        ctx.check(label, now == real, f"endpoint {now} (real {real}, attacker {fake})")

    tag, data = ctx.send_data(session)
    ctx.check("packet from the real address", ctx.delivered(tag) == 1, "delivered")
    stays("that packet replayed from the attacker", data)
    first_initiation = next(d.data for d in ctx.client.wire.log
                            if d.sent and d.data[0] == MESSAGE_INITIATION)
    stays("the consumed initiation replayed from the attacker", first_initiation)
    stays("a cookie reply from the attacker", cookie_reply(session.remote_index))
    forged = transport_header(session.remote_index, session.send_counter + 10) + os.urandom(48)
    stays("an unauthenticated transport message from the attacker", forged)
    # An authentic packet the attacker intercepted and delivered first: the server may
    # follow it (it is new and authentic), but only until the real peer speaks again.
    tag = ctx.tag()
    intercepted = ProbeClient.data(session, tag)
    ctx.client.send(intercepted, attacker)
    ctx.delivered(tag)
    time.sleep(min(SETTLE, ctx.remaining()))
    hijacked = ctx.endpoint()
    ctx.info("intercepted fresh packet sent first from the attacker",
             f"endpoint now {hijacked} ({'followed' if hijacked == fake else 'not followed'}"
             "; either is allowed)")
    ctx.measure("followed_intercepted_packet", float(hijacked == fake))
    tag, _ = ctx.send_data(session)
    ctx.delivered(tag)
    back = _wait_endpoint(ctx, real, 1.0)
    moves += back != real
    ctx.measure("endpoint_moves_to_attacker", moves)
    ctx.check("the real peer's next packet", back == real,
              f"endpoint {back} (real {real}, attacker {fake})")
    return (f"replays, a cookie reply and forgeries did not move the endpoint; "
            f"{'the intercepted packet moved it until' if hijacked == fake else 'it stayed at'}"
            f" the real peer's next packet")


PROBES = [
    Probe("roaming-spoof",
          "from an attacker host: a delivered transport packet replayed, the consumed "
          "initiation replayed, a cookie reply, an unauthenticated transport message; then "
          "a fresh authentic packet the attacker intercepted, followed by the real peer's "
          "next packet",
          "the endpoint never moves for replays or unauthenticated packets; after an "
          "intercepted fresh packet it is back at the real address with the peer's next "
          "packet",
          "WP 6.5 (roaming: only authenticated packets, the most recent one wins)",
          roaming_spoof, needs=("state",), delivery=True, attacker=True),
]
