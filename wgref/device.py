"""The sans-I/O WireGuard device: peers, cryptokey routing, sessions and timers.

Theory of operation. The device never touches a socket, a TUN or a clock. Its one API is
batches (see :mod:`wgref.results`): the I/O shell calls

* :meth:`Device.send_packets` with the IP packets read from the tunnel,
* :meth:`Device.receive_datagrams` with UDP payloads and the :class:`Endpoint` of each,
* :meth:`Device.handle_timers` whenever :meth:`Device.next_timer` is due,

and each appends to an output :class:`Batch` what to send, what to deliver and what happened
(events). :meth:`send_packet` and :meth:`receive_datagram` are batches of one. ``now`` is any
monotonic clock in seconds; wall-clock values (TAI64N timestamps, last-handshake times) come
from ``wall_clock()`` when given, else from ``now + epoch_offset``.

Seal and open, counters, timers and drop accounting exist once, in the batch loops below;
the session lifecycle (timers, rekey rules) lives in :mod:`wgref.timers`. Malformed,
unauthenticated or unwanted datagrams never raise: they are dropped, counted in
:attr:`Device.dropped` by :class:`DropReason` and reported as :class:`Dropped` events.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag

from . import timers
from .allowedips import AllowedIPs
from .checks import ALL_CHECKS, Checks
from .constants import (
    DEFAULT_MTU,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_TRANSPORT,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
    UNDER_LOAD_THRESHOLD,
)
from .cookie import CookieChecker, CookieMaker, LoadMonitor, RateLimiter
from .crypto import clamp, dh, public_key
from .errors import ProtocolError
from .handshake import DerivedKeys, Handshake, HandshakeState
from .keypair import Keypair
from .messages import CookieReply, Initiation, Response, message_type, parse
from .noise import open_initiation
from .peer import Address, Peer
from .results import (
    Batch,
    CookieReplyReceived,
    CookieReplySent,
    Dropped,
    DropReason,
    Endpoint,
    HandshakeCompleted,
    HandshakeInitiated,
    HandshakeResponded,
    HandshakeSecrets,
    KeysZeroed,
)
from .tai64n import tai64n
from .timers import (
    REKEY_ON_RECEIVE_AGE,
    authenticated_received,
    data_received,
    should_rekey_on_receive,
)

log = logging.getLogger("wgref.device")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# WP 5.4.6: type 4 with three reserved zero bytes (one LE32), receiver index, counter; the
# nonce is 4 zero bytes and the counter.
_TRANSPORT = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")
_ZEROS = bytes(16)


def padded_length(length: int, mtu: int) -> int:
    """WP 5.4.6; kernel send.c calculate_skb_padding: pad to a multiple of 16, capped at the
    MTU; a packet longer than the MTU is padded as if it were ``length % mtu`` long."""
    if mtu <= 0:
        return -(-length // PADDING_MULTIPLE) * PADDING_MULTIPLE
    last_unit = length % mtu if length > mtu else length
    padded = min(mtu, -(-last_unit // PADDING_MULTIPLE) * PADDING_MULTIPLE)
    return length + max(0, padded - last_unit)


def destination_address(packet: bytes) -> bytes | None:
    if packet:
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            return packet[16:20]
        if version == 6 and len(packet) >= 40:
            return packet[24:40]
    return None


def as_endpoint(source: Endpoint | Address) -> Endpoint:
    """An :class:`Endpoint` for a ``(host, port)`` pair (shells may pass either)."""
    return source if isinstance(source, Endpoint) else Endpoint(*source)


class RandomIndices:
    """Random 32-bit session indices (WP 5.4.2: I_i is a random 32-bit value)."""

    def __init__(self, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._rng = rng

    def __call__(self, taken: Callable[[int], bool]) -> int:
        while True:
            index: int = int.from_bytes(self._rng(4), "little")
            if not taken(index):
                return index


class Device:
    """A WireGuard interface's protocol state (see the module docstring)."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        mtu: int = DEFAULT_MTU,
        epoch_offset: float = 0.0,
        wall_clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        index_allocator: Callable[[Callable[[int], bool]], int] | None = None,
        under_load_threshold: int = UNDER_LOAD_THRESHOLD,
        keylog: bool = False,
        checks: Checks = ALL_CHECKS,
    ) -> None:
        self.mtu = mtu
        self.epoch_offset = epoch_offset
        self.wall_clock = wall_clock
        self.keylog = keylog
        self.checks = checks
        self.rng = rng or random.SystemRandom()
        self.random_bytes = random_bytes
        self.allocate_index = index_allocator or RandomIndices(random_bytes)
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.dropped: Counter[DropReason] = Counter()
        self.load = LoadMonitor(threshold=under_load_threshold)
        self.ratelimiter = RateLimiter()
        self._indices: dict[int, tuple[Peer, Keypair | None]] = {}
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self.cookie_checker: CookieChecker | None = None
        if private_key is not None:
            self.set_private_key(private_key)

    def wall_time(self, now: float) -> float:
        """Wall-clock seconds at ``now`` (for TAI64N and last-handshake times)."""
        return self.wall_clock() if self.wall_clock is not None else now + self.epoch_offset

    # ----------------------------------------------------------------- configuration

    def set_private_key(self, private_key: bytes | None) -> None:
        """Change (or clear) the static key. Peers whose public key equals ours are removed;
        every session is expired for sending so the next packet starts a handshake
        (as `wg set private-key` does)."""
        if private_key is not None:
            private_key = clamp(private_key)
            if private_key == self.private_key:
                return
        self.private_key = private_key
        self.public_key = public_key(private_key) if private_key else None
        self.cookie_checker = (
            CookieChecker.for_static(self.public_key, self.random_bytes)
            if self.public_key
            else None
        )
        for peer in list(self.peers.values()):
            if peer.public_key == self.public_key:
                self.remove_peer(peer.public_key)
                continue
            self._forget_handshake(peer)
            peer.handshake.set_local_static(private_key or b"", self.public_key or b"")
            self._expire_for_sending(peer)

    def add_peer(
        self,
        public_key: bytes,
        *,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | Address | None = None,
        persistent_keepalive: int | None = None,
        allowed_ips: Iterable[Network] = (),
    ) -> Peer:
        """Add a peer, or update an existing one (arguments left as None stay unchanged).
        Nothing is sent; a shell applying live configuration uses the setters below."""
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        peer = self.peers.get(public_key)
        if peer is None:
            handshake = Handshake(public_key, preshared_key)
            handshake.set_local_static(self.private_key or b"", self.public_key or b"")
            peer = Peer(public_key, handshake, CookieMaker.for_peer(public_key))
            self.peers[public_key] = peer
        elif preshared_key is not None:
            peer.handshake.preshared_key = preshared_key
        if endpoint is not None:
            peer.endpoint = as_endpoint(endpoint)
        if persistent_keepalive is not None:
            timers.persistent_keepalive_set(peer, persistent_keepalive)
        for network in allowed_ips:
            self.allowed_ips.insert(network, peer)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        self.allowed_ips.remove_peer(peer)
        self._forget_handshake(peer)
        for keypair in peer.keypairs.clear():
            self._indices.pop(keypair.local_index, None)
        peer.staged.clear()
        peer.timers.clear()

    def set_preshared_key(self, peer: Peer, preshared_key: bytes | None) -> None:
        peer.handshake.preshared_key = preshared_key or bytes(32)

    def set_endpoint(
        self, peer: Peer, endpoint: Endpoint | Address, now: float, out: Batch
    ) -> None:
        """Configure the endpoint (routing chooses the source) and send what was staged
        while the peer had none (netlink.c set_peer ends with wg_packet_send_staged_packets;
        wireguard-go's handlePostConfig likewise)."""
        peer.endpoint = as_endpoint(endpoint).without_source()
        self.send_staged(peer, now, out)

    def clear_endpoint_source(self, peer: Peer) -> None:
        """Forget the local address replies to ``peer`` leave from; routing chooses again
        (socket.c wg_socket_clear_peer_endpoint_src)."""
        endpoint = peer.endpoint
        if endpoint is not None and (endpoint.local or endpoint.ifindex):
            peer.endpoint = endpoint.without_source()

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float, out: Batch) -> None:
        """netlink.c set_peer: a keepalive goes out at once only when persistent keepalive
        goes from off to on."""
        if timers.persistent_keepalive_set(peer, interval):
            self.send_keepalive(peer, now, out)

    def add_allowed_ip(self, peer: Peer, network: Network) -> None:
        """Route ``network`` to ``peer`` (a prefix re-added moves to the end of its list, as
        in wireguard-go's get output)."""
        self.allowed_ips.remove(network, peer)
        self.allowed_ips.insert(network, peer)

    def remove_allowed_ip(self, peer: Peer, network: Network) -> None:
        self.allowed_ips.remove(network, peer)

    def clear_allowed_ips(self, peer: Peer) -> None:
        """``replace_allowed_ips``: drop every prefix of ``peer``."""
        self.allowed_ips.remove_peer(peer)

    # ----------------------------------------------------------------- outbound

    def send_packet(self, packet: bytes, now: float) -> Batch:
        """A batch of one :meth:`send_packets`."""
        out = Batch()
        self.send_packets([packet], now, out)
        return out

    def send_packets(self, packets: list[bytes], now: float, out: Batch) -> None:
        """Route IP packets from the tunnel to their peers by destination (WP 3) and seal
        them, in order (device.c wg_xmit, send.c wg_packet_send_staged_packets)."""
        lookup = self.allowed_ips.lookup
        i, n = 0, len(packets)
        while i < n:
            destination = destination_address(packets[i])
            j = i + 1
            if destination is None:
                self._drop(DropReason.BAD_OUTBOUND_PACKET, None, None, out)
                i = j
                continue
            # A run of packets to the same address (all the segments of a TSO frame).
            start, end = (16, 20) if len(destination) == 4 else (24, 40)
            while j < n and packets[j][start:end] == destination:
                if destination_address(packets[j]) != destination:
                    break  # the same bytes in a packet of the other IP version
                j += 1
            peer = lookup(destination)
            if peer is None:
                for _ in range(i, j):
                    self._drop(DropReason.NO_ROUTE, None, None, out)
                i = j
                continue
            keypair = peer.keypairs.current
            if (
                peer.staged
                or keypair is None
                or peer.endpoint is None
                or now - keypair.created >= REJECT_AFTER_TIME
                or keypair.send_counter + (j - i) > REKEY_AFTER_MESSAGES
            ):
                # No usable session, packets waiting, or a rekey near: queue behind them.
                peer.staged.extend(packets[i:j])
                self.send_staged(peer, now, out)
            else:
                self._seal(peer, keypair, packets[i:j], now, out)
                if timers.should_rekey_on_send(keypair, now):
                    self.send_handshake_initiation(peer, now, out, retry=False)
            i = j

    def send_keepalive(self, peer: Peer, now: float, out: Batch | None = None) -> Batch:
        """send.c wg_packet_send_keepalive: an empty packet unless data is already queued
        (with no session, it starts a handshake). Appends to ``out`` (or a new batch) and
        returns it."""
        out = Batch() if out is None else out
        if not peer.staged:
            peer.staged.append(b"")
        self.send_staged(peer, now, out)
        return out

    def send_staged(self, peer: Peer, now: float, out: Batch) -> None:
        """send.c wg_packet_send_staged_packets: seal the queue on the current session, or
        start a handshake when there is none usable."""
        if not peer.staged:
            return
        keypair = peer.keypairs.current
        if keypair is None or not keypair.can_send(now) or peer.endpoint is None:
            self.send_handshake_initiation(peer, now, out, retry=False)
            return
        room = REJECT_AFTER_MESSAGES - keypair.send_counter
        staged = peer.staged
        packets = list(staged) if len(staged) <= room else [staged[k] for k in range(room)]
        for _ in packets:
            staged.popleft()
        if packets:
            self._seal(peer, keypair, packets, now, out)
        # Packets left staged (the keypair ran out of counters) also need a new session.
        if staged or timers.should_rekey_on_send(keypair, now):
            self.send_handshake_initiation(peer, now, out, retry=False)

    def _seal(
        self, peer: Peer, keypair: Keypair, packets: list[bytes], now: float, out: Batch
    ) -> None:
        """Encrypt ``packets`` on ``keypair`` (the caller checked the counter has room) and
        send them to the peer's endpoint: the one place transport data is sealed."""
        encrypt, remote = keypair.sender.encrypt, keypair.remote_index
        header, nonce = _TRANSPORT.pack, _NONCE.pack
        counter, mtu = keypair.send_counter, self.mtu
        datagrams: list[bytes] = []
        sent_bytes = 0
        sent_data = False
        for packet in packets:
            size = len(packet)
            if size:
                sent_data = True
                # a full-MTU packet (every segment of a TSO frame but the last) is not padded
                if (size & 15 and size != mtu) or size > mtu:
                    padded = padded_length(size, mtu)
                    if padded != size:
                        pad = padded - size
                        packet += _ZEROS[:pad] if pad <= 16 else bytes(pad)
            data = header(MESSAGE_TRANSPORT, remote, counter) + encrypt(
                nonce(counter), packet, None
            )
            counter += 1
            sent_bytes += len(data)
            datagrams.append(data)
        keypair.send_counter = counter
        peer.tx_bytes += sent_bytes
        assert peer.endpoint is not None
        out.send(peer.endpoint, datagrams)
        timers.authenticated_sent(peer, now)
        if sent_data:
            timers.data_sent(peer, now, self._jitter)

    def initiate_handshake(
        self, peer: Peer, now: float, out: Batch | None = None, *, force: bool = False
    ) -> Batch:
        """Start a handshake now; ``force`` skips the once-per-REKEY_TIMEOUT limit (WP 6.1),
        as an explicit user request (BoringTun's force_resend) may."""
        out = Batch() if out is None else out
        if force:
            peer.last_sent_handshake = None
        self.send_handshake_initiation(peer, now, out, retry=False)
        return out

    def send_handshake_initiation(
        self, peer: Peer, now: float, out: Batch, *, retry: bool
    ) -> None:
        """send.c wg_packet_send_handshake_initiation: at most once per REKEY_TIMEOUT."""
        if not retry:
            peer.handshake_attempts = 0
        if self.private_key is None or not peer.handshake.usable or peer.endpoint is None:
            return
        if peer.last_sent_handshake is not None and (
            now - peer.last_sent_handshake < REKEY_TIMEOUT
        ):
            return
        self._forget_handshake(peer)
        index = self.allocate_index(self._indices.__contains__)
        ephemeral = clamp(self.random_bytes(32))
        message = peer.handshake.create_initiation(index, ephemeral, tai64n(self.wall_time(now)))
        self._indices[index] = (peer, None)
        data = peer.cookie.add_macs(message.to_bytes()[:116], now)
        peer.last_sent_handshake = now
        peer.initiation_sent_at = now
        peer.tx_bytes += len(data)
        timers.handshake_initiated(peer, now, self._jitter())
        timers.authenticated_sent(peer, now)
        log.debug("%r - Sending handshake initiation", peer)
        out.send(peer.endpoint, [data])
        out.events.append(HandshakeInitiated(peer))
        if self.keylog:
            out.secrets.append(self._secrets(peer, ephemeral))

    def _jitter(self) -> float:
        return self.rng.uniform(0.0, REKEY_TIMEOUT_JITTER_MAX)

    def _dh(self, private_key: bytes, public: bytes) -> bytes:
        try:
            return dh(private_key, public)
        except ProtocolError:
            if self.checks.low_order:
                raise
            return bytes(32)

    def _secrets(self, peer: Peer, ephemeral: bytes) -> HandshakeSecrets:
        assert self.private_key is not None
        return HandshakeSecrets(self.private_key, peer.public_key, ephemeral, peer.preshared_key)

    # ----------------------------------------------------------------- inbound

    def receive_datagram(self, data: bytes, source: Endpoint | Address, now: float) -> Batch:
        """A batch of one :meth:`receive_datagrams`."""
        out = Batch()
        self.receive_datagrams([data], [as_endpoint(source)], now, out)
        return out

    def receive_datagrams(
        self, datagrams: list[bytes], sources: list[Endpoint], now: float, out: Batch
    ) -> None:
        """Process UDP datagrams in order; ``sources[i]`` is where ``datagrams[i]`` came
        from. Never raises for bad input: drops are counted and reported as events.

        Transport data is opened here (receive.c wg_packet_rx_poll and
        wg_packet_consume_data_done); every other message goes to :meth:`_receive_control`.
        """
        if len(sources) != len(datagrams):
            raise ValueError("receive_datagrams needs one source per datagram")  # a shell's bug
        if sources and not isinstance(sources[0], Endpoint):  # (host, port) pairs: tolerated
            sources = [as_endpoint(source) for source in sources]
        indices = self._indices
        lookup = self.allowed_ips.lookup
        unpack = _TRANSPORT.unpack_from
        nonce = _NONCE.pack
        delivered = out.packets
        checks = self.checks
        if not checks.reserved:  # Checks.reserved off: the reserved bytes are ignored
            datagrams = [d[:1] + b"\0\0\0" + d[4:] if len(d) >= 4 else d for d in datagrams]
        last_source: bytes | None = None
        last_owner: object = None
        # Lengths checked above: zip with a keyword argument costs 0.1-0.2 us per call.
        for data, source in zip(datagrams, sources):  # noqa: B905
            # Transport data: type 4 with its three reserved bytes zero (one LE32).
            if len(data) < TRANSPORT_MIN_SIZE or (header := unpack(data))[0] != MESSAGE_TRANSPORT:
                self._receive_control(data, source, now, out)
                continue
            counter = header[2]
            entry = indices.get(header[1])
            if entry is None or (keypair := entry[1]) is None:
                self._drop(DropReason.UNKNOWN_INDEX, source, None, out)
                continue
            peer = entry[0]
            # receive.c wg_packet_rx_poll: a keypair too old, or a counter at the limit.
            age = now - keypair.created
            if age >= REJECT_AFTER_TIME or counter >= REJECT_AFTER_MESSAGES:
                self._drop(DropReason.EXPIRED_KEYPAIR, source, peer, out)
                continue
            try:
                plaintext = keypair.receiver.decrypt(
                    nonce(counter), data[TRANSPORT_HEADER_SIZE:], None
                )
            except InvalidTag:
                self._drop(DropReason.DECRYPT_FAILED, source, peer, out)
                continue
            # WP 5.4.6: the replay window is checked after authentication.
            replay = keypair.replay
            if checks.replay and not replay.check_and_update(counter, REJECT_AFTER_MESSAGES):
                self._drop(DropReason.REPLAY, source, peer, out)
                continue
            keypair.receive_count += 1
            if counter > keypair.receive_top:
                keypair.receive_top = counter
            # receive.c wg_packet_consume_data_done, in its order: the endpoint first (WP 6.5:
            # roam to the source of an authenticated packet), so packets released by the key
            # confirmation below go to it.
            if checks.roaming:
                peer.endpoint = source
            if keypair is not peer.keypairs.current:
                self._received_with_keypair(peer, keypair, now, out)
            # receive.c keep_key_fresh. The age test first is only a cheap filter: the keypair
            # received on is current or older, so it is at least as old as current.
            if (
                age > REKEY_ON_RECEIVE_AGE
                and not peer.sent_lastminute_handshake
                and should_rekey_on_receive(peer, now)
            ):
                peer.sent_lastminute_handshake = True
                self.send_handshake_initiation(peer, now, out, retry=False)
            authenticated_received(peer, now)
            if not plaintext:
                peer.rx_bytes += len(data)  # a keepalive
                continue
            data_received(peer, now)
            # The inner packet: a whole IPv4/IPv6 packet, padding trimmed, whose source the
            # cryptokey routing table gives to this peer (WP 3).
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
                self._drop(DropReason.BAD_INNER_PACKET, source, peer, out)
                continue
            if address != last_source:
                last_source, last_owner = address, lookup(address)
            if last_owner is not peer and checks.crypto_routing:
                self._drop(DropReason.CRYPTO_RP, source, peer, out)
                continue
            delivered.append(plaintext if length == size else plaintext[:length])
            # receive.c: rx bytes count the packets that made it through, after routing.
            peer.rx_bytes += len(data)

    def _received_with_keypair(
        self, peer: Peer, keypair: Keypair, now: float, out: Batch
    ) -> None:
        """noise.c wg_noise_received_with_keypair: data on the ``next`` keypair confirms it
        (WP 5.4.5); then the handshake is complete and the queue goes out."""
        if keypair is not peer.keypairs.next:
            return  # the previous keypair: packets in flight from before a rekey
        for old in peer.keypairs.confirm_next(keypair):
            self._indices.pop(old.local_index, None)
        self._handshake_complete(peer, now, out)
        self.send_staged(peer, now, out)

    def _drop(
        self, reason: DropReason, source: Endpoint | None, peer: Peer | None, out: Batch
    ) -> None:
        self.dropped[reason] += 1
        out.events.append(Dropped(reason, source, peer))

    def _receive_control(self, data: bytes, source: Endpoint, now: float, out: Batch) -> None:
        """A datagram that is not transport data on a known keypair: handshake messages,
        cookie replies, and everything malformed."""
        try:
            kind = message_type(data)
            if kind == MESSAGE_TRANSPORT:  # too short to be transport data
                raise ProtocolError(DropReason.BAD_SIZE, "transport message too short")
            if self.private_key is None or self.cookie_checker is None:
                raise ProtocolError(DropReason.NO_PRIVATE_KEY, "interface has no private key")
            if kind == MESSAGE_COOKIE_REPLY:
                self._receive_cookie_reply(data, now, out)
            else:
                self._receive_handshake(kind, data, source, now, out)
        except ProtocolError as exc:
            log.debug("dropped datagram from %s: %s", source, exc)
            self._drop(exc.reason, source, None, out)

    def _receive_handshake(
        self, kind: int, data: bytes, source: Endpoint, now: float, out: Batch
    ) -> None:
        checker = self.cookie_checker
        assert checker is not None
        checks = self.checks
        # WP 5.3 and receive.c wg_receive_handshake_packet: mac1 first; under load, mac2 or
        # a cookie reply, then a token bucket per source (ratelimiter.c).
        if checks.mac1 and not checker.check_mac1(data):
            raise ProtocolError(DropReason.BAD_MAC1, "mac1 is not for our public key")
        if self.load.record_handshake(now) and checks.cookie_replies:
            if not checker.check_mac2(data, source, now):
                reply = checker.make_reply(data, source, now)
                self._drop(DropReason.COOKIE_SENT, source, None, out)
                out.send(source, [reply.to_bytes()])
                out.events.append(CookieReplySent(source))
                return
            if not self.ratelimiter.allow(source.host, now):
                raise ProtocolError(DropReason.RATELIMITED, f"too many from {source.host}")
        message = parse(data)
        if kind == MESSAGE_INITIATION:
            assert isinstance(message, Initiation)
            self._receive_initiation(message, len(data), source, now, out)
        else:
            assert isinstance(message, Response)
            self._receive_response(message, len(data), source, now, out)

    def _static_static(self, initiator_static: bytes) -> bytes:
        peer = self.peers.get(initiator_static)
        if peer is None:
            raise ProtocolError(DropReason.UNKNOWN_PEER, "initiation from a key we do not know")
        if peer.handshake.static_static is None:
            raise ProtocolError(DropReason.LOW_ORDER_KEY, "all-zero static-static secret")
        return peer.handshake.static_static

    def _receive_initiation(
        self, message: Initiation, size: int, source: Endpoint, now: float, out: Batch
    ) -> None:
        assert self.private_key is not None and self.public_key is not None
        opened = open_initiation(
            message,
            self.public_key,
            self._dh(self.private_key, message.ephemeral),
            self._static_static,
        )
        peer = self.peers[opened.initiator_static]
        peer.handshake.consume_initiation(
            opened, message.sender, now, check_timestamp=self.checks.timestamp
        )
        self._free_handshake_index(peer)  # an initiation of ours in flight is abandoned
        if self.checks.roaming:
            peer.endpoint = source  # WP 6.5: roam to the source of an authenticated message
        peer.rx_bytes += size
        timers.authenticated_received(peer, now)
        # Respond at once (WP 5.4.3) and derive the responder's keypair, kept as "next".
        index = self.allocate_index(self._indices.__contains__)
        ephemeral = clamp(self.random_bytes(32))
        response = peer.handshake.create_response(index, ephemeral, dh=self._dh)
        data = peer.cookie.add_macs(response.to_bytes()[:60], now)
        self._install_keypair(peer, peer.handshake.derive_keys(is_initiator=False), now)
        # send.c: a response also counts as a handshake sent, so a responder does not start
        # its own initiation within REKEY_TIMEOUT while the initiator confirms.
        peer.last_sent_handshake = now
        peer.tx_bytes += len(data)
        timers.authenticated_sent(peer, now)
        log.debug("%r - Received handshake initiation, sending response", peer)
        destination = peer.endpoint if peer.endpoint is not None else source
        out.send(destination, [data])
        out.events.append(HandshakeResponded(peer))
        if self.keylog:
            out.secrets.append(self._secrets(peer, ephemeral))

    def _receive_response(
        self, message: Response, size: int, source: Endpoint, now: float, out: Batch
    ) -> None:
        entry = self._indices.get(message.receiver)
        if entry is None or entry[1] is not None:
            raise ProtocolError(DropReason.UNKNOWN_INDEX, f"response to {message.receiver:08x}")
        peer = entry[0]
        peer.handshake.consume_response(message)
        self._indices.pop(message.receiver, None)
        self._install_keypair(peer, peer.handshake.derive_keys(is_initiator=True), now)
        if self.checks.roaming:
            peer.endpoint = source
        peer.rx_bytes += size
        if peer.initiation_sent_at is not None:
            peer.rtt = now - peer.initiation_sent_at
        self._handshake_complete(peer, now, out)
        timers.authenticated_received(peer, now)
        log.debug("%r - Received handshake response", peer)
        # receive.c: the initiator confirms the session with queued data, or a keepalive.
        self.send_keepalive(peer, now, out)

    def _receive_cookie_reply(self, data: bytes, now: float, out: Batch) -> None:
        message = parse(data)
        assert isinstance(message, CookieReply)
        entry = self._indices.get(message.receiver)
        if entry is None:
            raise ProtocolError(DropReason.UNKNOWN_INDEX, "cookie reply for an unknown index")
        # WP 6.6: store the cookie; the retransmit timer sends the next initiation.
        entry[0].cookie.consume_reply(message, now)
        out.events.append(CookieReplyReceived(entry[0]))

    # ----------------------------------------------------------------- sessions

    def _install_keypair(self, peer: Peer, keys: DerivedKeys, now: float) -> None:
        keypair = Keypair(
            keys.send_key,
            keys.receive_key,
            now,
            keys.is_initiator,
            keys.local_index,
            keys.remote_index,
        )
        for old in peer.keypairs.install(keypair):
            self._indices.pop(old.local_index, None)
        self._indices[keypair.local_index] = (peer, keypair)
        timers.session_derived(peer, now)

    def _handshake_complete(self, peer: Peer, now: float, out: Batch) -> None:
        timers.handshake_complete(peer, self.wall_time(now))
        out.events.append(HandshakeCompleted(peer))

    def _free_handshake_index(self, peer: Peer) -> None:
        """Free the index of a handshake in flight (not of an installed keypair)."""
        entry = self._indices.get(peer.handshake.local_index)
        if entry is not None and entry[1] is None and entry[0] is peer:
            del self._indices[peer.handshake.local_index]

    def _forget_handshake(self, peer: Peer) -> None:
        self._free_handshake_index(peer)
        peer.handshake.clear()

    def _expire_for_sending(self, peer: Peer) -> None:
        for keypair in (peer.keypairs.current, peer.keypairs.next):
            if keypair is not None:
                keypair.send_counter = REJECT_AFTER_MESSAGES
        peer.last_sent_handshake = None

    def zero_key_material(self, peer: Peer, out: Batch) -> None:
        """timers.c wg_expired_zero_key_material: erase every keypair and the handshake."""
        for keypair in peer.keypairs.clear():
            self._indices.pop(keypair.local_index, None)
        self._forget_handshake(peer)
        out.events.append(KeysZeroed(peer))

    # ----------------------------------------------------------------- timers

    def next_timer(self) -> float | None:
        """The earliest deadline over all peers, or None."""
        deadlines = [t for peer in self.peers.values() if (t := peer.timers.earliest()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timers(self, now: float, out: Batch) -> None:
        """Run every timer that is due at ``now`` (WP 6; see :mod:`wgref.timers`)."""
        for peer in list(self.peers.values()):
            timers.expire(self, peer, now, out)

    def handle_timer(self, now: float) -> Batch:
        """:meth:`handle_timers` into a new batch."""
        out = Batch()
        self.handle_timers(now, out)
        return out


__all__ = [
    "Batch",
    "Device",
    "Endpoint",
    "HandshakeSecrets",
    "HandshakeState",
    "as_endpoint",
    "padded_length",
]
