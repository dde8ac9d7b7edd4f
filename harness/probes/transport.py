"""Probes of the transport path: replayed and out-of-range counters, forged ciphertext,
reserved bytes, unknown receiver indices and cryptokey routing on receive. Each sends a bad
packet, then a control packet; the bad one must not be delivered, must not be answered, and
the control must be (the session survives)."""

from __future__ import annotations

from wgref.constants import REJECT_AFTER_MESSAGES, TRANSPORT_HEADER_SIZE

from .base import Probe, ProbeContext
from .client import ProbeClient
from .craft import ALIEN_INNER, CLIENT_INNER, Session, flip_bit, with_receiver, with_reserved

FAR_AHEAD = 100_000  # more than any replay window (kernel: 8128 counters)


def _judge(ctx: ProbeContext, session: Session, bad: list[tuple[str, int, str, int]],
           control: str = "control packet") -> None:
    """Send a control packet, wait for it, then check each bad packet ``(label, tag, inner
    source, expected deliveries)``, that nothing was sent back, and that the control got
    through (the session survived)."""
    tag, _ = ctx.send_data(session)
    count = ctx.delivered(tag)
    for label, bad_tag, src, expected in bad:
        found = ctx.not_delivered(bad_tag, src=src)
        ctx.check(label, found == expected,
                  f"delivered {found} times" + ("" if found == expected else
                                                f" (expected {expected})"))
    replies = ctx.replies(session)
    ctx.check("no reply to the bad packets", not replies,
              "nothing sent back" if not replies else f"server sent: {'; '.join(replies)}")
    ctx.check(control, count == 1,
              f"a valid packet sent after them was delivered {count} times (expected once)")


def transport_replay(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    tag, data = ctx.send_data(session)
    ctx.check("original packet", ctx.delivered(tag) == 1, "delivered once")
    ctx.client.send(data)
    ctx.client.send(data)
    _judge(ctx, session, [("same datagram sent twice more", tag, CLIENT_INNER, 1)])
    return "a replayed transport packet was dropped; the session survived"


def counter_behind_window(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    ahead, _ = ctx.send_data(session, counter=FAR_AHEAD)
    ctx.check(f"counter {FAR_AHEAD} (jump ahead)", ctx.delivered(ahead) == 1, "delivered")
    session.send_counter = FAR_AHEAD + 1
    old, _ = ctx.send_data(session, counter=2)
    _judge(ctx, session, [(f"counter 2, {FAR_AHEAD - 2} behind the top", old, CLIENT_INNER, 0)])
    return f"a counter {FAR_AHEAD - 2} behind the window's top was dropped"


def counter_reject_after(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    limit, _ = ctx.send_data(session, counter=REJECT_AFTER_MESSAGES)
    top, _ = ctx.send_data(session, counter=(1 << 64) - 1)
    _judge(ctx, session, [("counter REJECT_AFTER_MESSAGES (2^64 - 8130)", limit,
                           CLIENT_INNER, 0),
                          ("counter 2^64 - 1", top, CLIENT_INNER, 0)],
           "control packet (next small counter)")
    return "counters at REJECT_AFTER_MESSAGES and 2^64 - 1 were dropped; the session survived"


def ciphertext_bitflip(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    tag = ctx.tag()
    data = ProbeClient.data(session, tag)
    ctx.client.send(flip_bit(data, TRANSPORT_HEADER_SIZE + 3))
    ctx.client.send(flip_bit(data, len(data) - 1, 7))
    ctx.client.send(data)  # the authentic packet with the same counter
    count = ctx.delivered(tag)
    ctx.check("authentic packet with the same counter, after the forgeries", count == 1,
              f"delivered {count} times: " + (
                  "the forged packets did not use up the counter" if count == 1 else
                  "a forged packet consumed the counter (replay window updated before "
                  "authentication), or was delivered itself"))
    _judge(ctx, session, [("ciphertext bit and tag bit flipped", tag, CLIENT_INNER, 1)])
    return "forged packets were dropped and did not use up their counter"


def reserved_transport(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    tag = ctx.tag()
    data = ProbeClient.data(session, tag)
    ctx.client.send(with_reserved(data, 0x000001))
    ctx.client.send(with_reserved(data, 0x010000))
    _judge(ctx, session, [("transport with reserved bytes 000001 / 010000", tag,
                           CLIENT_INNER, 0)])
    return "transport messages with non-zero reserved bytes were dropped"


def unknown_receiver(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    tag = ctx.tag()
    data = ProbeClient.data(session, tag)
    ctx.client.send(with_receiver(data, session.remote_index ^ 0x5A5A5A5A))
    _judge(ctx, session, [("transport to an unknown receiver index", tag, CLIENT_INNER, 0)])
    return "a transport message with an unknown receiver index was dropped"


def crypto_rp(ctx: ProbeContext) -> str:
    session = ctx.confirmed_session()
    alien, _ = ctx.send_data(session, src=ALIEN_INNER)
    _judge(ctx, session, [(f"authentic packet with inner source {ALIEN_INNER}", alien,
                           ALIEN_INNER, 0)], f"control packet from {CLIENT_INNER}")
    return f"an inner packet from {ALIEN_INNER} (outside the peer's allowed-ips) was dropped"


PROBES = [
    Probe("transport-replay", "a delivered transport datagram sent twice more",
          "not delivered again, no reply; the next packet is delivered",
          "WP 5.4.6 (sliding window), 5.1", transport_replay, delivery=True),
    Probe("counter-behind-window",
          f"counter {FAR_AHEAD}, then counter 2 (far behind the window's top)",
          "counter 2 is not delivered and not answered; the next packet is delivered",
          "WP 5.4.6; kernel receive.c counter_validate", counter_behind_window,
          delivery=True),
    Probe("counter-reject-after",
          "authentic packets with counters REJECT_AFTER_MESSAGES (the kernel's "
          "U64_MAX - COUNTER_WINDOW_SIZE - 1 = 2^64 - 8130; WP 6.1 and wireguard-go stop "
          "earlier, at 2^64 - 2^13 - 1) and 2^64 - 1",
          "neither is delivered or answered; a packet with the next small counter is",
          "WP 5.4.6, 6.1 (Reject-After-Messages)", counter_reject_after, delivery=True),
    Probe("ciphertext-bitflip",
          "an authentic packet with one ciphertext bit flipped, one with a tag bit flipped, "
          "then the authentic packet (same counter)",
          "the forgeries are dropped without a reply and do not use up the counter: the "
          "authentic packet is delivered once",
          "WP 5.4.6 (authenticate, then check the counter); kernel receive.c",
          ciphertext_bitflip, delivery=True),
    Probe("reserved-transport", "an authentic transport message with reserved bytes set",
          "not delivered, no reply; the next packet is delivered",
          "WP 5.4.6 (reserved zero); kernel receive.c validate_header_len",
          reserved_transport, delivery=True),
    Probe("unknown-receiver-index",
          "an authentic transport message whose receiver index names no session",
          "not delivered, no reply; the next packet is delivered",
          "WP 5.4.6 (receiver index lookup)", unknown_receiver, delivery=True),
    Probe("crypto-rp",
          f"an authentic packet whose inner source is {ALIEN_INNER} (the peer is allowed "
          f"only {CLIENT_INNER}/32)",
          "not delivered (cryptokey routing on receive), no reply; a packet from the "
          "allowed source is delivered",
          "WP 3 (cryptokey routing), 5.4.6", crypto_rp, delivery=True,
          config=("allowed-ips",)),
]
