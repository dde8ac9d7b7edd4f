"""The documented error types of wgref's protocol core."""

from __future__ import annotations

from .results import DropReason


class ProtocolError(ValueError):
    """A datagram or message that the protocol rejects.

    Raised by the parsing and handshake functions; ``reason`` is a :class:`DropReason` (a
    string enum: the counter's name) and the message says what was wrong. The device catches
    it for every received datagram, counts it by reason and drops the datagram.
    """

    def __init__(self, reason: DropReason | str, detail: str = "") -> None:
        self.reason = DropReason(reason)
        super().__init__(f"{self.reason}: {detail}" if detail else str(self.reason))


class ConfigError(ValueError):
    """A configuration value that cannot be used (bad key, bad prefix, bad endpoint...)."""
