"""The session lifecycle's one home: timers, the hooks that arm them, and the rekey rules
(WP 6; shaped like the kernel's drivers/net/wireguard/timers.c).

A peer has five timers, each a deadline in the device's clock (None when not armed):

* ``retransmit_handshake`` — an initiation got no response within REKEY_TIMEOUT (+ jitter):
  send another, up to MAX_TIMER_HANDSHAKES retries, then give up (purge the staged packets,
  stop the passive keepalive, schedule zeroing the keys).
* ``send_keepalive`` — data arrived and we have sent nothing back within KEEPALIVE_TIMEOUT:
  send a keepalive (the passive keepalive).
* ``new_handshake`` — we sent data and heard nothing back (not even a keepalive) within
  KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter): start a new handshake.
* ``zero_key_material`` — REJECT_AFTER_TIME * 3 after the last session was derived: erase
  every key and the handshake state.
* ``persistent_keepalive`` — if configured, a keepalive every interval seconds of silence
  on our side.

The hooks below are called by :class:`~wgref.device.Device` at the matching events, one per
event as in the kernel; the expiry handlers run from :meth:`Device.handle_timers`. The rekey
predicates (:func:`should_rekey_on_send`, :func:`should_rekey_on_receive`) decide when a
session is about to be too old or too used and a new handshake is due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    ZERO_KEYS_AFTER,
)

if TYPE_CHECKING:
    from .device import Device
    from .keypair import Keypair
    from .peer import Peer
    from .results import Batch

log = logging.getLogger("wgref.device")

# receive.c keep_key_fresh: the initiator starts a handshake when a session it receives on is
# this old, so that the new one is ready before REJECT_AFTER_TIME.
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT


@dataclass(slots=True)
class Timers:
    """A peer's deadlines in the device's clock, None when not armed."""

    retransmit_handshake: float | None = None
    send_keepalive: float | None = None
    new_handshake: float | None = None
    zero_key_material: float | None = None
    persistent_keepalive: float | None = None

    def earliest(self) -> float | None:
        pending = [
            t
            for t in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if t is not None
        ]
        return min(pending) if pending else None

    def clear(self) -> None:
        """timers.c wg_timers_stop."""
        self.retransmit_handshake = self.send_keepalive = self.new_handshake = None
        self.zero_key_material = self.persistent_keepalive = None


# ----------------------------------------------------------------- hooks (one per event)


def data_sent(peer: Peer, now: float, jitter: Callable[[], float]) -> None:
    """timers.c wg_timers_data_sent: expect an answer within KEEPALIVE + REKEY_TIMEOUT
    (``jitter()`` is drawn only when the timer is armed: it may cost a getrandom call)."""
    timers = peer.timers
    if timers.new_handshake is None:
        timers.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter()


def data_received(peer: Peer, now: float) -> None:
    """timers.c wg_timers_data_received: answer with a keepalive if we stay silent."""
    timers = peer.timers
    if timers.send_keepalive is None:
        timers.send_keepalive = now + KEEPALIVE_TIMEOUT
    else:
        peer.need_another_keepalive = True


def authenticated_sent(peer: Peer, now: float) -> None:
    """timers.c wg_timers_any_authenticated_packet_sent, then _traversal (the kernel calls
    both for every authenticated packet sent)."""
    peer.timers.send_keepalive = None
    if peer.persistent_keepalive:
        peer.timers.persistent_keepalive = now + peer.persistent_keepalive


def authenticated_received(peer: Peer, now: float) -> None:
    """timers.c wg_timers_any_authenticated_packet_received, then _traversal."""
    peer.timers.new_handshake = None
    if peer.persistent_keepalive:
        peer.timers.persistent_keepalive = now + peer.persistent_keepalive


def handshake_initiated(peer: Peer, now: float, jitter: float) -> None:
    """timers.c wg_timers_handshake_initiated."""
    peer.timers.retransmit_handshake = now + REKEY_TIMEOUT + jitter


def handshake_complete(peer: Peer, wall_now: float) -> None:
    """timers.c wg_timers_handshake_complete (``wall_now``: the wall-clock time, for
    last-handshake)."""
    peer.timers.retransmit_handshake = None
    peer.handshake_attempts = 0
    peer.sent_lastminute_handshake = False
    peer.last_handshake = wall_now


def session_derived(peer: Peer, now: float) -> None:
    """timers.c wg_timers_session_derived: zero the keys if no new session comes."""
    peer.timers.zero_key_material = now + ZERO_KEYS_AFTER


def persistent_keepalive_set(peer: Peer, interval: int) -> bool:
    """A new persistent-keepalive interval; returns whether a keepalive is due at once
    (netlink.c set_peer: only when it goes from off to on)."""
    send_now = not peer.persistent_keepalive and bool(interval)
    peer.persistent_keepalive = interval
    if not interval:
        peer.timers.persistent_keepalive = None
    return send_now


# ----------------------------------------------------------------- rekey predicates


def should_rekey_on_send(keypair: Keypair, now: float) -> bool:
    """send.c keep_key_fresh: the current session has sent REKEY_AFTER_MESSAGES, or we
    initiated it REKEY_AFTER_TIME ago (WP 6.2)."""
    return keypair.send_counter > REKEY_AFTER_MESSAGES or (
        keypair.is_initiator and now - keypair.created > REKEY_AFTER_TIME
    )


def should_rekey_on_receive(peer: Peer, now: float) -> bool:
    """receive.c keep_key_fresh: once per session (sent_lastminute_handshake), the initiator
    of the *current* session rekeys when it nears REJECT_AFTER_TIME."""
    if peer.sent_lastminute_handshake:
        return False
    keypair = peer.keypairs.current
    return (
        keypair is not None
        and keypair.is_initiator
        and keypair.can_send(now)
        and now - keypair.created > REKEY_ON_RECEIVE_AGE
    )


# ----------------------------------------------------------------- expiry


def expire(device: Device, peer: Peer, now: float, out: Batch) -> None:
    """Run ``peer``'s timers that are due at ``now`` (the kernel's wg_expired_* handlers)."""
    timers = peer.timers
    if timers.retransmit_handshake is not None and timers.retransmit_handshake <= now:
        timers.retransmit_handshake = None
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            # wg_expired_retransmit_handshake: give up; the handshake state is kept, so a
            # late response still completes it.
            log.debug("%r - Handshake did not complete, giving up", peer)
            timers.send_keepalive = None
            peer.staged.clear()
            if timers.zero_key_material is None:
                timers.zero_key_material = now + ZERO_KEYS_AFTER
        else:
            peer.handshake_attempts += 1
            log.debug("%r - Handshake did not complete, retrying", peer)
            # The remembered source address may be why: forget it (socket.c).
            device.clear_endpoint_source(peer)
            device.send_handshake_initiation(peer, now, out, retry=True)
    if timers.send_keepalive is not None and timers.send_keepalive <= now:
        timers.send_keepalive = None
        # wg_expired_send_keepalive -> wg_packet_send_keepalive: with no usable session it
        # stages an empty packet, which starts a handshake.
        device.send_keepalive(peer, now, out)
        if peer.need_another_keepalive:
            peer.need_another_keepalive = False
            timers.send_keepalive = now + KEEPALIVE_TIMEOUT
    if timers.new_handshake is not None and timers.new_handshake <= now:
        timers.new_handshake = None
        log.debug("%r - No reply to data, starting a new handshake", peer)
        device.clear_endpoint_source(peer)
        device.send_handshake_initiation(peer, now, out, retry=False)
    if timers.zero_key_material is not None and timers.zero_key_material <= now:
        timers.zero_key_material = None
        log.debug("%r - Zeroing all keys", peer)
        device.zero_key_material(peer, out)
    if timers.persistent_keepalive is not None and timers.persistent_keepalive <= now:
        timers.persistent_keepalive = None
        if peer.persistent_keepalive and device.checks.persistent_keepalive:
            device.send_keepalive(peer, now, out)


__all__ = [
    "REKEY_ON_RECEIVE_AGE",
    "Timers",
    "authenticated_received",
    "authenticated_sent",
    "data_received",
    "data_sent",
    "expire",
    "handshake_complete",
    "handshake_initiated",
    "persistent_keepalive_set",
    "session_derived",
    "should_rekey_on_receive",
    "should_rekey_on_send",
]
