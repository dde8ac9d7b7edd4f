"""The probe client: handshakes and tagged data over a :class:`~harness.probes.wire.Wire`."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from wgref.constants import MESSAGE_COOKIE_REPLY, MESSAGE_RESPONSE
from wgref.errors import ProtocolError

from .craft import (
    CLIENT_INNER,
    LISTEN_PORT,
    SERVER_INNER,
    Initiator,
    PendingInitiation,
    Session,
    udp_packet,
)
from .wire import Address, Datagram, Wire


class HandshakeFailed(RuntimeError):
    """A valid initiation was never answered: the probe cannot get to what it tests."""


def reply_to(sender: int, kinds: tuple[int, ...] = (MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY)
             ) -> Callable[[Datagram], bool]:
    """A matcher for a response or cookie reply addressed to our index ``sender``."""

    def match(record: Datagram) -> bool:
        data = record.data
        return (len(data) >= 8 and data[0] in kinds
                and struct.unpack_from("<I", data, 8 if data[0] == MESSAGE_RESPONSE else 4)[0]
                == sender)

    return match


class ProbeClient:
    def __init__(self, wire: Wire, initiator: Initiator, server: Address) -> None:
        self.wire = wire
        self.initiator = initiator
        self.server = server

    def send(self, data: bytes, wire: Wire | None = None) -> Datagram:
        return (wire or self.wire).send(data, self.server)

    def answer(self, pending: PendingInitiation, timeout: float) -> Datagram | None:
        """The response or cookie reply to ``pending``, or None within ``timeout``."""
        return self.wire.wait_for(reply_to(pending.sender), timeout)

    def handshake(self, *, attempts: int = 3, timeout: float = 3.0) -> tuple[Session, float]:
        """A completed handshake and its round-trip time; retried with fresh initiations."""
        problems = []
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.1)  # keep clear of the 50/s initiation limit
            pending = self.initiator.initiation()
            sent = self.send(pending.data)
            reply = self.answer(pending, timeout)
            if reply is None:
                problems.append(f"no answer in {timeout:g} s")
                continue
            try:
                if reply.data[0] == MESSAGE_COOKIE_REPLY:
                    self.initiator.take_cookie(pending, reply.data)
                    problems.append("cookie reply (server under load)")
                    continue
                return self.initiator.complete(pending, reply.data), reply.at - sent.at
            except ProtocolError as exc:
                problems.append(f"bad {reply.describe()}: {exc}")
        raise HandshakeFailed(f"no handshake with the server after {attempts} valid "
                              f"initiations: {'; '.join(problems)}")

    @staticmethod
    def data(session: Session, tag: int, *, src: str = CLIENT_INNER,
             counter: int | None = None) -> bytes:
        """A transport message carrying inner UDP ``src:tag -> server:LISTEN_PORT``."""
        packet = udp_packet(src, SERVER_INNER, tag, LISTEN_PORT, f"probe {tag}".encode())
        return session.seal(packet, counter)
