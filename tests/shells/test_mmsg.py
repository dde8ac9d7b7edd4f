"""wgref.mmsg: recvmmsg over ctypes, on a real socket pair."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from wgref.mmsg import Slots


def test_slots_receive_each_datagram_in_its_own_slot_up_to_the_limit() -> None:
    slots = Slots(4, 2048)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        sent = [os.urandom(n) for n in (1, 700, 2048, 5, 9)]
        for data in sent:
            theirs.send(data)
        first = slots.receive(ours.fileno(), 3)
        assert [slots.buffer[start : start + size] for start, size in first] == sent[:3]
        assert [start for start, _ in first] == [0, 2048, 4096]
        rest = slots.receive(ours.fileno(), 64)  # no more than the 4 slots, 2 waiting
        assert [slots.buffer[start : start + size] for start, size in rest] == sent[3:]
        assert slots.receive(ours.fileno(), 64) == []  # nothing waits: no blocking


def test_slots_report_socket_errors() -> None:
    slots = Slots(2, 64)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    fd = sock.fileno()
    sock.close()
    with pytest.raises(OSError) as info:
        slots.receive(fd, 2)
    assert info.value.errno == errno.EBADF
