"""wgref.keypair directly: limits of one keypair and the previous/current/next rotation
(WP 5.4.5, 6.1; kernel noise.c wg_noise_handshake_begin_session / received_with_keypair)."""

from __future__ import annotations

from wgref.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgref.keypair import Keypair, KeypairSet


def keypair(index: int, *, initiator: bool, created: float = 0.0) -> Keypair:
    return Keypair(bytes([index]) * 32, bytes([index + 1]) * 32, created, initiator, index, 0)


def test_limits_of_one_keypair() -> None:
    k = keypair(1, initiator=True, created=100.0)
    assert k.can_send(100.0) and k.can_receive(100.0)
    late = 100.0 + REJECT_AFTER_TIME
    assert not k.can_send(late) and not k.can_receive(late)
    assert [k.next_counter() for _ in range(3)] == [0, 1, 2] and k.send_counter == 3
    k.send_counter = REJECT_AFTER_MESSAGES - 1
    assert k.can_send(100.0)
    k.next_counter()
    assert not k.can_send(100.0) and k.can_receive(100.0)


def test_initiator_keypair_becomes_current_at_once() -> None:
    keys = KeypairSet()
    first, second, third = (keypair(i, initiator=True) for i in (1, 2, 3))
    assert keys.install(first) == []
    assert keys.install(second) == []
    assert (keys.previous, keys.current, keys.next) == (first, second, None)
    assert keys.install(third) == [first]
    assert (keys.previous, keys.current) == (second, third)


def test_responder_keypair_waits_as_next_until_confirmed() -> None:
    keys = KeypairSet()
    current = keypair(1, initiator=True)
    keys.install(current)
    waiting = keypair(2, initiator=False)
    assert keys.install(waiting) == []
    assert (keys.previous, keys.current, keys.next) == (None, current, waiting)
    replaced = keypair(3, initiator=False)
    assert keys.install(replaced) == [waiting]  # a newer unconfirmed one replaces it
    assert keys.confirm_next(waiting) == []  # not "next" any more: nothing happens
    assert keys.confirm_next(replaced) == []
    assert (keys.previous, keys.current, keys.next) == (current, replaced, None)
    assert keys.all() == [replaced, current]


def test_initiator_install_while_next_waits_keeps_next_as_previous() -> None:
    keys = KeypairSet()
    old, mine = keypair(1, initiator=True), keypair(3, initiator=True)
    waiting = keypair(2, initiator=False)
    keys.install(old)
    keys.install(waiting)
    assert keys.install(mine) == [old]
    assert (keys.previous, keys.current, keys.next) == (waiting, mine, None)
    assert set(map(id, keys.clear())) == {id(waiting), id(mine)}
    assert keys.all() == []
