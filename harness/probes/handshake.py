"""Probes of the responder's handshake defences: replays, timestamps, the per-peer
initiation rate, mac1, reserved bytes, sizes and small-order ephemeral keys."""

from __future__ import annotations

import time

from wgref.constants import MESSAGE_RESPONSE
from wgref.handshake import Handshake
from wgref.messages import INITIATION_MAC1_OFFSET

from .base import QUIET, Probe, ProbeContext, ProbeError
from .client import reply_to
from .craft import (
    LOW_ORDER_POINTS,
    PendingInitiation,
    cookie_reply,
    flip_bit,
    random_index,
    remac,
    resized,
    timestamp,
    with_reserved,
)
from .wire import Datagram

GAP = 0.1  # between initiations: clear of the 20 ms per-peer limit


def _answered(ctx: ProbeContext, pending: PendingInitiation, data: bytes | None = None,
              timeout: float = QUIET) -> Datagram | None:
    ctx.client.send(data if data is not None else pending.data)
    return ctx.client.answer(pending, min(timeout, ctx.remaining()))


def _baseline(ctx: ProbeContext, pending: PendingInitiation, label: str) -> None:
    reply = _answered(ctx, pending, timeout=3.0)
    if reply is None or reply.data[0] != MESSAGE_RESPONSE:
        raise ProbeError(f"{label}: a valid initiation was not answered with a response "
                         f"({reply.describe() if reply else 'nothing within 3 s'})")
    ctx.info(label, f"valid initiation answered: {reply.describe()}")


def _silent(ctx: ProbeContext, label: str, reply: Datagram | None, what: str,
            soft: bool = False) -> None:
    observed = (f"no answer to {what}" if reply is None else
                f"answered {what}: {reply.describe()}")
    if soft:
        ctx.soft_check(label, reply is None, observed)
    else:
        ctx.check(label, reply is None, observed)


def initiation_replay(ctx: ProbeContext) -> str:
    pending = ctx.client.initiator.initiation()
    _baseline(ctx, pending, "original initiation")
    time.sleep(GAP)
    again = _answered(ctx, pending)
    ctx.measure("responses_to_replay", 0 if again is None else 1)
    _silent(ctx, "byte-identical replay", again, "the replayed initiation (same TAI64N)")
    return "a replayed initiation got no response"


def initiation_old_timestamp(ctx: ProbeContext) -> str:
    now = timestamp()
    _baseline(ctx, ctx.client.initiator.initiation(ts=now), "initiation at T")
    time.sleep(GAP)
    older = ctx.client.initiator.initiation(ts=timestamp(-5.0))
    _silent(ctx, "fresh initiation stamped T - 5 s", _answered(ctx, older),
            "an initiation with an older timestamp")
    time.sleep(GAP)
    same = ctx.client.initiator.initiation(ts=now)
    _silent(ctx, "fresh initiation stamped T again", _answered(ctx, same),
            "an initiation with an equal timestamp")
    time.sleep(GAP)
    _baseline(ctx, ctx.client.initiator.initiation(), "control: initiation stamped now")
    return "initiations stamped earlier than or equal to the last one got no response"


BURST = 10
BURST_SPACING = 0.01  # 100 initiations per second


def initiation_rate_limit(ctx: ProbeContext) -> str:
    _baseline(ctx, ctx.client.initiator.initiation(), "baseline initiation")
    time.sleep(GAP)
    burst = []
    started = time.monotonic()
    for index in range(BURST):
        pending = ctx.client.initiator.initiation()
        pause = started + index * BURST_SPACING - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        ctx.client.send(pending.data)
        burst.append(pending)
    spread = time.monotonic() - started
    matchers = [reply_to(p.sender, (MESSAGE_RESPONSE,)) for p in burst]
    replies = ctx.client.wire.collect(min(1.5, ctx.remaining()))
    answered = sum(1 for r in replies if any(match(r) for match in matchers))
    rate = (BURST - 1) / spread if spread > 0 else float("inf")
    ctx.measure("burst_sent", BURST)
    ctx.measure("burst_answered", answered)
    ctx.measure("burst_rate_per_s", rate)
    observed = f"{answered} of {BURST} initiations sent at {rate:.0f}/s were answered"
    ctx.check("burst above 50/s", answered < BURST, observed)
    return observed


def bad_mac1(ctx: ProbeContext) -> str:
    pending = ctx.client.initiator.initiation()
    for bit, offset in ((0, INITIATION_MAC1_OFFSET), (7, INITIATION_MAC1_OFFSET + 15)):
        bad = flip_bit(pending.data, offset, bit)
        _silent(ctx, f"mac1 byte {offset - INITIATION_MAC1_OFFSET} bit {bit} flipped",
                _answered(ctx, pending, bad), "an initiation with a wrong mac1", soft=True)
        time.sleep(GAP)
    ctx.settle()
    _baseline(ctx, pending, "control: the same initiation, mac1 intact")
    return "initiations with a wrong mac1 were dropped silently"


def reserved_initiation(ctx: ProbeContext) -> str:
    pending = ctx.client.initiator.initiation()
    server = ctx.client.initiator.server_public
    for value in (0x000001, 0x010000):
        bad = remac(with_reserved(pending.data, value), server)
        _silent(ctx, f"reserved bytes {bad[1:4].hex()} (mac1 recomputed)",
                _answered(ctx, pending, bad), "an initiation with non-zero reserved bytes",
                soft=True)
        time.sleep(GAP)
    ctx.settle()
    _baseline(ctx, pending, "control: the same initiation, reserved bytes zero")
    return "initiations with non-zero reserved bytes were dropped silently"


def wrong_size(ctx: ProbeContext) -> str:
    pending = ctx.client.initiator.initiation()
    for size in (147, 149, 164):
        _silent(ctx, f"initiation of {size} bytes (mac1 intact)",
                _answered(ctx, pending, resized(pending.data, size)),
                f"a {size}-byte initiation", soft=True)
        time.sleep(GAP)
    junk = {"response of 91 bytes": bytes([2, 0, 0, 0]) + bytes(87),
            "response of 93 bytes": bytes([2, 0, 0, 0]) + bytes(89),
            "cookie reply of 63 bytes": cookie_reply(random_index())[:63],
            "cookie reply of 65 bytes": cookie_reply(random_index()) + b"\x00",
            "transport of 31 bytes": bytes([4, 0, 0, 0]) + bytes(27),
            "3-byte datagram": b"\x01\x00\x00"}
    for data in junk.values():
        ctx.client.send(data)
    replies = ctx.replies()
    ctx.soft_check("wrong-size response, cookie reply, transport", not replies,
                   "no reply" if not replies else f"replies: {'; '.join(replies)}")
    ctx.settle()
    _baseline(ctx, pending, "control: the same initiation at 148 bytes")
    return "initiations of 147/149/164 bytes and short or long other messages were dropped"


def low_order_ephemeral(ctx: ProbeContext) -> str:
    for name, point in LOW_ORDER_POINTS.items():
        sender = random_index()
        data = ctx.client.initiator.low_order_initiation(point, sender=sender)
        pending = PendingInitiation(data, sender, Handshake(ctx.client.initiator.server_public))
        _silent(ctx, f"ephemeral = {name} point", _answered(ctx, pending),
                f"an initiation with a small-order ({name}) ephemeral key", soft=True)
        time.sleep(GAP)
    ctx.settle()
    _baseline(ctx, ctx.client.initiator.initiation(), "control: a valid initiation")
    return "initiations with small-order ephemeral keys got no response"


PROBES = [
    Probe("initiation-replay",
          "a valid initiation, then the same 148 bytes again 100 ms later",
          "the replay gets no response (its TAI64N is not greater than the last one)",
          "WP 5.1 (replay attack), 5.4.2", initiation_replay),
    Probe("initiation-old-timestamp",
          "a valid initiation stamped T, then fresh initiations (new ephemeral) stamped "
          "T - 5 s and T",
          "neither gets a response; a later one stamped now is answered",
          "WP 5.1, 5.4.2 (greatest timestamp received)", initiation_old_timestamp),
    Probe("initiation-rate-limit",
          f"{BURST} distinct valid initiations, {BURST_SPACING * 1000:.0f} ms apart (100/s)",
          "not all are answered (the kernel consumes at most one per 20 ms per peer)",
          "WP 5.1 (flood of initiations); kernel noise.c INITIATIONS_PER_SECOND",
          initiation_rate_limit, exclusive=True),
    Probe("bad-mac1", "a valid initiation with one bit of mac1 flipped (first and last byte)",
          "silently dropped; the intact initiation is then answered",
          "WP 5.3, 5.4.4", bad_mac1),
    Probe("reserved-initiation",
          "a valid initiation with reserved bytes 000001 / 010000 and mac1 recomputed",
          "silently dropped (the header is compared as one LE32); the clean one is answered",
          "WP 5.4.2 (reserved zero); kernel receive.c validate_header_len",
          reserved_initiation),
    Probe("wrong-size",
          "initiations of 147, 149 and 164 bytes (valid mac1), responses of 91/93 bytes, "
          "cookie replies of 63/65 bytes, a 31-byte transport, a 3-byte datagram",
          "all silently dropped; the 148-byte initiation is then answered",
          "WP 5.4.2-5.4.7 (fixed sizes); kernel receive.c validate_header_len", wrong_size),
    Probe("low-order-ephemeral",
          "initiations whose ephemeral key is a small-order point (zero, order 8), "
          "encrypted as if DH(E_i, S_r) = 0",
          "no response (DH results of all zeros are rejected)",
          "WP 5.4.2, RFC 7748 s. 6.1; kernel noise.c (curve25519 failure)",
          low_order_ephemeral),
]
