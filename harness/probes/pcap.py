"""What the captures saw, by WireGuard message type and direction (scapy's dissector)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from scapy.contrib.wireguard import Wireguard
from scapy.error import Scapy_Exception
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from ..context import SERVER_PORT
from .craft import KIND_NAMES


def summarize(path: Path, server_address: str, limit: int = 50_000) -> dict[str, int]:
    """Counts like ``to_server.initiation`` / ``from_server.cookie-reply`` in one capture."""
    try:
        packets = rdpcap(str(path), count=limit)
    except (OSError, Scapy_Exception, EOFError):
        return {}
    counts: Counter[str] = Counter()
    for packet in packets:
        if IP not in packet or UDP not in packet:
            continue
        udp = packet[UDP]
        if SERVER_PORT not in (udp.sport, udp.dport):
            continue
        if packet[IP].dst == server_address and udp.dport == SERVER_PORT:
            direction = "to_server"
        elif packet[IP].src == server_address and udp.sport == SERVER_PORT:
            direction = "from_server"
        else:
            continue
        kind = "other"
        if Wireguard in packet:
            kind = KIND_NAMES.get(int(packet[Wireguard].message_type), "other")
        counts[f"{direction}.{kind}"] += 1
    return dict(counts)
