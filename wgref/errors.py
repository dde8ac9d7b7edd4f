"""The documented error types of wgref's protocol core."""


class ProtocolError(ValueError):
    """A datagram or message that the protocol rejects.

    Raised by the parsing and handshake functions; ``reason`` is a short machine-friendly tag
    (for counters) and the message says what was wrong. The device catches it for every
    received datagram, counts it by reason and drops the datagram.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(ValueError):
    """A configuration value that cannot be used (bad key, bad prefix, bad endpoint...)."""
