"""The transport-data hot path: whole batches of packets and datagrams on established sessions.

:class:`~wgref.device.Device` is the reference: :meth:`Device.send_packet` and
:meth:`Device.receive_datagram` handle one packet at a time and return one action object per
datagram or delivered packet, which is clear but costs several microseconds of interpreter
work per packet (a route lookup, a staging queue, a frozen dataclass per action, the message
parser). At 1 Gbit/s that is most of a CPU. This module trades that readability for speed in
the common case only: a run of packets to one peer with a usable current session, or
transport messages on a peer's current session with nothing unusual pending.

* It keeps no state of its own and changes the device exactly as the reference path would
  (counters, replay windows, byte counts, endpoints, timers, drop reasons): for the same
  inputs the datagrams, delivered packets and device state are byte-for-byte the same
  (tests/test_fastpath.py checks this against the reference path).
* Anything else (no session, a handshake message, a session to rotate or rekey, a message
  that does not authenticate or replays, ...) goes through the reference path unchanged, in
  order. So the protocol logic lives in one place, device.py; this file only repeats the
  transport-data steps, inlined.

Results are collected in a :class:`Batch` for the I/O shell: packets for the tunnel in order,
and datagrams grouped per destination (ready for UDP segmentation offload).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from .constants import (
    KEEPALIVE_TIMEOUT,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
)
from .device import Action, Deliver, Device, HandshakeSecrets, SendDatagram, padded_length
from .peer import Address

__all__ = ["Batch", "receive_datagrams", "send_packets"]

# WP 5.4.6: type 4, receiver index, counter (little-endian); the nonce is 4 zero bytes and
# the counter.
_TRANSPORT = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")
# Kernel timers.c wg_timers_data_sent / the rekey check of Device._receive_transport.
_REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
_ZEROS = bytes(16)


@dataclass(slots=True)
class Batch:
    """What a batch asks the I/O shell to do: ``packets`` for the tunnel in order,
    ``sends`` as runs of datagrams per destination in order, and key-log ``secrets``."""

    packets: list[bytes] = field(default_factory=list)
    sends: list[tuple[Address, list[bytes]]] = field(default_factory=list)
    secrets: list[HandshakeSecrets] = field(default_factory=list)

    def send(self, destination: Address, datagrams: list[bytes]) -> None:
        sends = self.sends
        if sends and sends[-1][0] == destination:
            sends[-1][1].extend(datagrams)
        else:
            sends.append((destination, datagrams))

    def add(self, actions: list[Action]) -> None:
        """Append the actions of the reference path."""
        for action in actions:
            if isinstance(action, SendDatagram):
                self.send(action.destination, [action.data])
            elif isinstance(action, Deliver):
                self.packets.append(action.packet)
            else:
                self.secrets.append(action)

    def __bool__(self) -> bool:
        return bool(self.packets or self.sends or self.secrets)


def _destination(packet: bytes) -> bytes | None:
    """The destination address of an IPv4/IPv6 packet (as device.destination_address)."""
    if packet:
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            return packet[16:20]
        if version == 6 and len(packet) >= 40:
            return packet[24:40]
    return None


def send_packets(device: Device, packets: list[bytes], now: float, out: Batch) -> None:
    """:meth:`Device.send_packet` for each packet, in order, into ``out``."""
    if not device.checks.all_on:
        for packet in packets:
            out.add(device.send_packet(packet, now))
        return
    lookup = device.allowed_ips.lookup
    i, n = 0, len(packets)
    while i < n:
        destination = _destination(packets[i])
        j = i + 1
        if destination is not None:
            # A run of packets to the same address (all the segments of a TSO frame).
            start, end = (16, 20) if len(destination) == 4 else (24, 40)  # a cheap pre-check
            while j < n and packets[j][start:end] == destination:
                if _destination(packets[j]) != destination:
                    break  # the same bytes in a packet of the other IP version
                j += 1
        peer = lookup(destination) if destination is not None else None
        keypair = peer.keypairs.current if peer is not None else None
        if (
            peer is None
            or keypair is None
            or peer.staged
            or peer.endpoint is None
            or now - keypair.created >= REJECT_AFTER_TIME
            or keypair.send_counter + (j - i) > REKEY_AFTER_MESSAGES
            or (keypair.is_initiator and now - keypair.created > REKEY_AFTER_TIME)
        ):
            # No route, no usable session, or a rekey due: the reference path decides.
            for packet in packets[i:j]:
                out.add(device.send_packet(packet, now))
            i = j
            continue
        # Device._send_staged for each packet, inlined; REKEY_AFTER_MESSAGES <
        # REJECT_AFTER_MESSAGES, so the whole run can be sent on this keypair.
        encrypt, remote = keypair.sender.encrypt, keypair.remote_index
        header, nonce = _TRANSPORT.pack, _NONCE.pack  # header(MESSAGE_TRANSPORT, ...)
        counter, mtu = keypair.send_counter, device.mtu
        datagrams: list[bytes] = []
        sent_bytes = 0
        sent_data = False
        for packet in packets[i:j]:
            size = len(packet)
            if size:
                sent_data = True
                if size & 15 or size > mtu:
                    padded = padded_length(size, mtu)
                    if padded != size:
                        pad = padded - size
                        packet += _ZEROS[:pad] if pad <= 16 else bytes(pad)
            data = header(4, remote, counter) + encrypt(nonce(counter), packet, None)
            counter += 1
            sent_bytes += len(data)
            datagrams.append(data)
        keypair.send_counter = counter
        peer.tx_bytes += sent_bytes
        out.send(peer.endpoint, datagrams)
        device._timers_authenticated_sent(peer, now)
        if sent_data and peer.timers.new_handshake is None:
            peer.timers.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + device._jitter()
        i = j


def receive_datagrams(
    device: Device, datagrams: list[bytes], sources: list[Address], now: float, out: Batch
) -> None:
    """:meth:`Device.receive_datagram` for each datagram, in order, into ``out``."""
    if not device.checks.all_on:
        for data, source in zip(datagrams, sources, strict=True):
            out.add(device.receive_datagram(data, source, now))
        return
    indices = device._indices
    lookup = device.allowed_ips.lookup
    unpack = _TRANSPORT.unpack_from
    nonce = _NONCE.pack
    delivered = out.packets
    last_source: bytes | None = None
    last_owner: object = None
    for data, source in zip(datagrams, sources, strict=True):
        entry = None
        if len(data) >= TRANSPORT_MIN_SIZE:
            kind, index, counter = unpack(data)
            if kind == MESSAGE_TRANSPORT:  # with its three reserved bytes zero
                entry = indices.get(index)
        keypair = entry[1] if entry is not None else None
        if keypair is None:
            out.add(device.receive_datagram(data, source, now))  # not transport data
            continue
        assert entry is not None
        peer = entry[0]
        age = now - keypair.created
        if (
            keypair is not peer.keypairs.current
            or age >= REJECT_AFTER_TIME
            or counter >= REJECT_AFTER_MESSAGES
            or (keypair.is_initiator and age > _REKEY_ON_RECEIVE_AGE)
        ):
            out.add(device.receive_datagram(data, source, now))  # rotation, expiry, rekey
            continue
        try:
            plaintext = keypair.receiver.decrypt(nonce(counter), data[TRANSPORT_HEADER_SIZE:], None)
        except InvalidTag:
            out.add(device.receive_datagram(data, source, now))  # counted and logged there
            continue
        if not keypair.replay.check_and_update(counter, REJECT_AFTER_MESSAGES):
            out.add(device.receive_datagram(data, source, now))  # a replay: the same
            continue
        # Device._receive_transport from here on, inlined.
        keypair.receive_count += 1
        if counter > keypair.receive_top:
            keypair.receive_top = counter
        peer.endpoint = source
        peer.rx_bytes += len(data)
        timers = peer.timers
        timers.new_handshake = None
        if peer.persistent_keepalive:
            timers.persistent_keepalive = now + peer.persistent_keepalive
        if not plaintext:
            continue  # a keepalive
        if timers.send_keepalive is None:
            timers.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            peer.need_another_keepalive = True
        # device.inner_length and the cryptokey-routing check (WP 3).
        size = len(plaintext)
        version = plaintext[0] >> 4
        if version == 4 and size >= 20:
            length = (plaintext[2] << 8) | plaintext[3]
            if not 20 <= length <= size:
                length = -1
            address = plaintext[12:16]
        elif version == 6 and size >= 40:
            length = 40 + ((plaintext[4] << 8) | plaintext[5])
            if length > size:
                length = -1
            address = plaintext[8:24]
        else:
            length = -1
            address = b""
        if length < 0:
            device.dropped["bad-inner-packet"] += 1  # device.inner_length's ProtocolError
            continue
        if address != last_source:
            last_source, last_owner = address, lookup(address)
        if last_owner is not peer:
            device.dropped["crypto-rp"] += 1
            continue
        delivered.append(plaintext if length == size else plaintext[:length])
