"""In-memory pairs of wgref Devices under a fake clock (in the style of aioquic's tests).

A :class:`Node` wraps one :class:`~wgref.device.Device` with a UDP address, turns the batches it
returns into records (:class:`SendDatagram` waiting in ``outbox``, :class:`Deliver` in
``delivered``, events in ``events``) and logs every datagram it sent. :func:`transfer` moves
the datagrams of one node to another; :func:`roundtrip` does it both ways until nothing is
left; :meth:`Pair.run` advances the fake clock from timer deadline to timer deadline, moving
datagrams as it goes. Everything is
deterministic: keys, indices and ephemerals come from seeded ``random.Random`` instances.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wgref.constants import MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT
from wgref.crypto import clamp
from wgref.device import Device
from wgref.peer import Peer
from wgref.results import Batch, Endpoint, Event, HandshakeSecrets

Address = tuple[str, int]
A_ADDR: Address = ("192.0.2.1", 51820)
B_ADDR: Address = ("198.51.100.2", 51821)
A_TUN4, B_TUN4 = "10.0.0.1", "10.0.0.2"
A_TUN6, B_TUN6 = "fd00::1", "fd00::2"

Drop = Callable[[bytes], bool]


def det_bytes(seed: int | str) -> Callable[[int], bytes]:
    """A deterministic ``random_bytes`` for Device(random_bytes=...)."""
    return random.Random(seed).randbytes


def make_key(seed: int) -> bytes:
    return clamp(random.Random(f"key-{seed}").randbytes(32))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packet(src: str, dst: str, payload: bytes = b"", proto: int = 17) -> bytes:
    """A well-formed IPv4 packet (20-byte header, total length and checksum set)."""
    total = 20 + len(payload)
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack(">H", _checksum(header)) + header[12:]
    return header + payload


def ipv6_packet(src: str, dst: str, payload: bytes = b"", next_header: int = 17) -> bytes:
    """A well-formed IPv6 packet (40-byte header, payload length set)."""
    header = struct.pack(
        ">IHBB16s16s",
        6 << 28,
        len(payload),
        next_header,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


def kind(data: bytes) -> int:
    return data[0]


def is_initiation(data: bytes) -> bool:
    return data[0] == MESSAGE_INITIATION and len(data) == 148


def is_response(data: bytes) -> bool:
    return data[0] == MESSAGE_RESPONSE and len(data) == 92


def is_transport(data: bytes) -> bool:
    return data[0] == MESSAGE_TRANSPORT


def is_keepalive(data: bytes) -> bool:
    return data[0] == MESSAGE_TRANSPORT and len(data) == 32


def drop_all(_data: bytes) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """One datagram of a batch's ``sends`` (``destination``: its ``(host, port)``)."""

    endpoint: Endpoint
    data: bytes

    @property
    def destination(self) -> Address:
        return self.endpoint.address


@dataclass(frozen=True, slots=True)
class Deliver:
    """One packet of a batch's ``packets``."""

    packet: bytes


Action = SendDatagram | Deliver | HandshakeSecrets


def actions_of(batch: Batch) -> list[Action]:
    """A batch as records: its datagrams, then its packets, then its secrets."""
    records: list[Action] = [SendDatagram(d, data) for d, data in batch.datagrams()]
    records += [Deliver(p) for p in batch.packets]
    records += batch.secrets
    return records


@dataclass
class Node:
    """One device with its address, its pending datagrams and what it delivered."""

    name: str
    device: Device
    address: Address
    outbox: list[SendDatagram] = field(default_factory=list)
    delivered: list[Deliver] = field(default_factory=list)
    sent: list[tuple[float, SendDatagram]] = field(default_factory=list)
    other_actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def absorb(self, batch: Batch, now: float) -> list[Action]:
        self.events += batch.events
        actions = actions_of(batch)
        for action in actions:
            if isinstance(action, SendDatagram):
                self.outbox.append(action)
                self.sent.append((now, action))
            elif isinstance(action, Deliver):
                self.delivered.append(action)
            else:
                self.other_actions.append(action)
        return actions

    def send(self, packet: bytes, now: float) -> list[Action]:
        return self.absorb(self.device.send_packet(packet, now), now)

    def receive(self, data: bytes, source: Address, now: float) -> list[Action]:
        return self.absorb(self.device.receive_datagram(data, source, now), now)

    def timer(self, now: float) -> list[Action]:
        return self.absorb(self.device.handle_timer(now), now)

    def take_outbox(self) -> list[bytes]:
        """Remove and return the pending datagrams (as bytes)."""
        out, self.outbox = self.outbox, []
        return [d.data for d in out]

    def sent_data(self, since: float = float("-inf")) -> list[tuple[float, bytes]]:
        return [(t, d.data) for t, d in self.sent if t >= since]

    def initiation_times(self) -> list[float]:
        return [t for t, d in self.sent if is_initiation(d.data)]

    @property
    def public_key(self) -> bytes:
        assert self.device.public_key is not None
        return self.device.public_key


def transfer(sender: Node, receiver: Node, now: float, *, drop: Drop | None = None) -> int:
    """Move ``sender``'s datagrams addressed to ``receiver`` into ``receiver``.

    Returns how many were handed over (dropped ones are removed but not counted).
    """
    moved = 0
    keep: list[SendDatagram] = []
    pending, sender.outbox = sender.outbox, keep
    for datagram in pending:
        if datagram.destination != receiver.address:
            keep.append(datagram)
            continue
        if drop is not None and drop(datagram.data):
            continue
        receiver.receive(datagram.data, sender.address, now)
        moved += 1
    return moved


def roundtrip(
    a: Node, b: Node, now: float, *, drop_ab: Drop | None = None, drop_ba: Drop | None = None
) -> int:
    """Transfer both ways until both outboxes hold nothing for the other node."""
    total = 0
    for _ in range(50):
        moved = transfer(a, b, now, drop=drop_ab) + transfer(b, a, now, drop=drop_ba)
        if (
            not moved
            and not any(d.destination == b.address for d in a.outbox)
            and not any(d.destination == a.address for d in b.outbox)
        ):
            return total
        total += moved
    raise AssertionError("datagrams kept bouncing between the nodes")


@dataclass
class Pair:
    """Two nodes configured as each other's peer, and a fake clock."""

    a: Node
    b: Node
    now: float = 1000.0

    @property
    def peer_ab(self) -> Peer:
        """A's peer entry for B."""
        return self.a.device.peers[self.b.public_key]

    @property
    def peer_ba(self) -> Peer:
        """B's peer entry for A."""
        return self.b.device.peers[self.a.public_key]

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def roundtrip(self, **drops: Drop | None) -> int:
        return roundtrip(self.a, self.b, self.now, **drops)

    def a_to_b(self, packet: bytes | None = None) -> bytes:
        return packet if packet is not None else ipv4_packet(A_TUN4, B_TUN4, b"a->b")

    def handshake(self) -> None:
        """Complete a handshake initiated by A (confirmed by A's keepalive)."""
        self.a.absorb(self.a.device.send_keepalive(self.peer_ab, self.now), self.now)
        self.roundtrip()
        assert self.peer_ab.keypairs.current is not None
        assert self.peer_ba.keypairs.current is not None

    def next_deadline(self) -> float | None:
        deadlines = [t for t in (self.a.device.next_timer(), self.b.device.next_timer()) if t]
        return min(deadlines) if deadlines else None

    def run(
        self,
        until: float,
        *,
        drop_ab: Drop | None = None,
        drop_ba: Drop | None = None,
        max_steps: int = 10_000,
    ) -> None:
        """Advance the clock to ``until``, firing every timer on the way and moving datagrams."""
        self.roundtrip(drop_ab=drop_ab, drop_ba=drop_ba)
        for _ in range(max_steps):
            deadline = self.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.a.timer(self.now)
            self.b.timer(self.now)
            self.roundtrip(drop_ab=drop_ab, drop_ba=drop_ba)
        else:
            raise AssertionError("timers kept firing")
        self.now = max(self.now, until)


def make_node(name: str, seed: int, **device_kwargs: Any) -> Node:
    device_kwargs.setdefault("rng", random.Random(f"jitter-{name}-{seed}"))
    device_kwargs.setdefault("random_bytes", det_bytes(f"bytes-{name}-{seed}"))
    device = Device(make_key(seed), **device_kwargs)
    return Node(name, device, A_ADDR if name == "A" else B_ADDR)


def make_pair(
    *,
    seed: int = 0,
    psk_a: bytes | None = None,
    psk_b: bytes | None = None,
    a_kwargs: dict[str, Any] | None = None,
    b_kwargs: dict[str, Any] | None = None,
    keepalive_a: int = 0,
    keepalive_b: int = 0,
    b_knows_a_endpoint: bool = True,
    a_addr: Address = A_ADDR,
    b_addr: Address = B_ADDR,
) -> Pair:
    """A and B, each the other's peer; A's allowed IPs are 10.0.0.1/32 and fd00::1/128 at B,
    B's are 10.0.0.2/32 and fd00::2/128 at A. A knows B's endpoint."""
    a = make_node("A", 2 * seed + 1, **(a_kwargs or {}))
    b = make_node("B", 2 * seed + 2, **(b_kwargs or {}))
    a.address, b.address = a_addr, b_addr
    a.device.add_peer(
        b.public_key,
        preshared_key=psk_a,
        endpoint=b.address,
        persistent_keepalive=keepalive_a,
        allowed_ips=[ipaddress.ip_network(f"{B_TUN4}/32"), ipaddress.ip_network(f"{B_TUN6}/128")],
    )
    b.device.add_peer(
        a.public_key,
        preshared_key=psk_b,
        endpoint=a.address if b_knows_a_endpoint else None,
        persistent_keepalive=keepalive_b,
        allowed_ips=[ipaddress.ip_network(f"{A_TUN4}/32"), ipaddress.ip_network(f"{A_TUN6}/128")],
    )
    return Pair(a, b)


def established_pair(**kwargs: Any) -> Pair:
    """A pair whose handshake (initiated by A) completed one second ago."""
    pair = make_pair(**kwargs)
    pair.handshake()
    pair.advance(1.0)
    return pair
