"""wgref.timers directly: one hook per event and the rekey predicates (kernel timers.c,
send.c and receive.c keep_key_fresh), on a bare Peer."""

from __future__ import annotations

import pytest

from wgref import timers
from wgref.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    ZERO_KEYS_AFTER,
)
from wgref.cookie import CookieMaker
from wgref.handshake import Handshake
from wgref.keypair import Keypair
from wgref.peer import Peer


def bare_peer(persistent_keepalive: int = 0) -> Peer:
    key = bytes(range(32))
    peer = Peer(key, Handshake(key), CookieMaker.for_peer(key))
    peer.persistent_keepalive = persistent_keepalive
    return peer


def with_current(peer: Peer, *, initiator: bool, created: float) -> Keypair:
    keypair = Keypair(bytes(32), bytes(32), created, initiator, 1, 2)
    peer.keypairs.current = keypair
    return keypair


def test_data_sent_arms_new_handshake_once() -> None:
    peer = bare_peer()
    timers.data_sent(peer, 10.0, jitter=lambda: 0.1)
    assert peer.timers.new_handshake == 10.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 0.1
    timers.data_sent(peer, 12.0, jitter=lambda: 0.2)  # already pending: unchanged
    assert peer.timers.new_handshake == 10.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 0.1
    timers.authenticated_received(peer, 13.0)
    assert peer.timers.new_handshake is None


def test_data_received_arms_keepalive_or_asks_for_another() -> None:
    peer = bare_peer()
    timers.data_received(peer, 5.0)
    assert peer.timers.send_keepalive == 5.0 + KEEPALIVE_TIMEOUT
    assert not peer.need_another_keepalive
    timers.data_received(peer, 6.0)
    assert peer.need_another_keepalive and peer.timers.send_keepalive == 5.0 + KEEPALIVE_TIMEOUT
    timers.authenticated_sent(peer, 7.0)
    assert peer.timers.send_keepalive is None


def test_traversal_rearms_persistent_keepalive() -> None:
    peer = bare_peer(persistent_keepalive=25)
    timers.authenticated_sent(peer, 1.0)
    assert peer.timers.persistent_keepalive == 26.0
    timers.authenticated_received(peer, 3.0)
    assert peer.timers.persistent_keepalive == 28.0


def test_handshake_hooks() -> None:
    peer = bare_peer()
    timers.handshake_initiated(peer, 1.0, jitter=0.2)
    assert peer.timers.retransmit_handshake == 1.0 + REKEY_TIMEOUT + 0.2
    peer.handshake_attempts, peer.sent_lastminute_handshake = 3, True
    timers.handshake_complete(peer, wall_now=1_700_000_000.0)
    assert peer.timers.retransmit_handshake is None and peer.handshake_attempts == 0
    assert not peer.sent_lastminute_handshake and peer.last_handshake == 1_700_000_000.0
    timers.session_derived(peer, 2.0)
    assert peer.timers.zero_key_material == 2.0 + ZERO_KEYS_AFTER
    assert peer.timers.earliest() == 2.0 + ZERO_KEYS_AFTER
    peer.timers.clear()
    assert peer.timers.earliest() is None


@pytest.mark.parametrize(
    ("old", "new", "send_now"), [(0, 25, True), (25, 30, False), (25, 0, False), (0, 0, False)]
)
def test_persistent_keepalive_set(old: int, new: int, send_now: bool) -> None:
    peer = bare_peer(persistent_keepalive=old)
    peer.timers.persistent_keepalive = 99.0 if old else None
    assert timers.persistent_keepalive_set(peer, new) is send_now
    assert peer.persistent_keepalive == new
    if not new:
        assert peer.timers.persistent_keepalive is None


def test_should_rekey_on_send() -> None:
    mine = Keypair(bytes(32), bytes(32), 0.0, True, 1, 2)
    theirs = Keypair(bytes(32), bytes(32), 0.0, False, 3, 4)
    assert not timers.should_rekey_on_send(mine, REKEY_AFTER_TIME)
    assert timers.should_rekey_on_send(mine, REKEY_AFTER_TIME + 0.001)
    assert not timers.should_rekey_on_send(theirs, REKEY_AFTER_TIME + 0.001)  # initiator only
    theirs.send_counter = REKEY_AFTER_MESSAGES + 1
    assert timers.should_rekey_on_send(theirs, 0.0)  # by count: both sides


def test_should_rekey_on_receive_looks_at_current_once() -> None:
    age = timers.REKEY_ON_RECEIVE_AGE
    assert age == REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    peer = bare_peer()
    assert not timers.should_rekey_on_receive(peer, 1000.0)  # no current keypair
    with_current(peer, initiator=False, created=0.0)
    assert not timers.should_rekey_on_receive(peer, age + 1)  # the responder does not
    with_current(peer, initiator=True, created=0.0)
    assert not timers.should_rekey_on_receive(peer, age)
    assert timers.should_rekey_on_receive(peer, age + 1)
    peer.sent_lastminute_handshake = True
    assert not timers.should_rekey_on_receive(peer, age + 1)
    peer.sent_lastminute_handshake = False
    assert not timers.should_rekey_on_receive(peer, REJECT_AFTER_TIME)  # no longer valid


def test_peer_preshared_key_and_repr() -> None:
    peer = bare_peer()
    assert peer.preshared_key is None
    peer.handshake.preshared_key = bytes([7]) * 32
    assert peer.preshared_key == bytes([7]) * 32
    assert repr(peer).startswith("peer(AAECAwQF")
