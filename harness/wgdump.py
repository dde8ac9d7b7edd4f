"""Parse `wg show IFNAME dump` (wireguard-tools' tab-separated format)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class DumpError(ValueError):
    """The text is not a `wg show dump` of one interface."""


@dataclass(frozen=True, slots=True)
class PeerState:
    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # seconds since the epoch, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int  # 0 = off

    def handshake_text(self, now: float | None = None) -> str:
        """latest_handshake for people: ``21:16:13 UTC (3 s ago)``, or ``never``."""
        if self.latest_handshake == 0:
            return "never"
        clock = time.strftime("%H:%M:%S UTC", time.gmtime(self.latest_handshake))
        ago = round((time.time() if now is None else now) - self.latest_handshake)
        return f"{clock} ({ago} s ago)" if ago >= 0 else clock


@dataclass(frozen=True, slots=True)
class DeviceState:
    public_key: str
    listen_port: int
    fwmark: str
    peers: dict[str, PeerState] = field(default_factory=dict)

    def only_peer(self) -> PeerState | None:
        return next(iter(self.peers.values()), None)


def _none(value: str) -> str | None:
    return None if value in ("(none)", "off", "") else value


def parse_dump(text: str) -> DeviceState:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DumpError("empty dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise DumpError(f"interface line has {len(head)} fields, expected 4: {lines[0]!r}")
    peers: dict[str, PeerState] = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) != 8:
            raise DumpError(f"peer line has {len(cols)} fields, expected 8: {line!r}")
        allowed = () if cols[3] == "(none)" else tuple(cols[3].split(","))
        keepalive = 0 if cols[7] == "off" else int(cols[7])
        peers[cols[0]] = PeerState(
            public_key=cols[0],
            preshared_key=_none(cols[1]),
            endpoint=_none(cols[2]),
            allowed_ips=allowed,
            latest_handshake=int(cols[4]),
            rx_bytes=int(cols[5]),
            tx_bytes=int(cols[6]),
            persistent_keepalive=keepalive,
        )
    return DeviceState(head[1], int(head[2]), head[3], peers)
